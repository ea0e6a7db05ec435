//! Validation of sampler settings.

use thaw_sampling::{Sampler, SamplerConfig, SamplingError};

fn field_of(config: SamplerConfig) -> String {
    match config.validate() {
        Err(SamplingError::InvalidConfig { field, .. }) => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn defaults_are_llama_cpp_like_and_valid() {
    let d = SamplerConfig::default();
    assert_eq!(
        (d.temperature, d.top_k, d.top_p, d.min_p),
        (0.8, 40, 0.95, 0.05)
    );
    assert_eq!((d.repeat_penalty, d.repeat_last_n), (1.0, 64));
    assert_eq!((d.frequency_penalty, d.presence_penalty), (0.0, 0.0));
    assert_eq!(d.seed, None);
    assert!(d.logit_bias.is_empty());
    assert_eq!(d.validate(), Ok(()));
    assert_eq!(SamplerConfig::greedy().validate(), Ok(()));
}

#[test]
fn out_of_range_values_name_the_field() {
    let d = SamplerConfig::default;
    let cases: Vec<(SamplerConfig, &str)> = vec![
        (
            SamplerConfig {
                temperature: -0.1,
                ..d()
            },
            "temperature",
        ),
        (
            SamplerConfig {
                temperature: f32::NAN,
                ..d()
            },
            "temperature",
        ),
        (
            SamplerConfig {
                temperature: f32::INFINITY,
                ..d()
            },
            "temperature",
        ),
        (SamplerConfig { top_p: 0.0, ..d() }, "top_p"),
        (SamplerConfig { top_p: 1.01, ..d() }, "top_p"),
        (
            SamplerConfig {
                top_p: f32::NAN,
                ..d()
            },
            "top_p",
        ),
        (
            SamplerConfig {
                min_p: -0.01,
                ..d()
            },
            "min_p",
        ),
        (SamplerConfig { min_p: 1.5, ..d() }, "min_p"),
        (
            SamplerConfig {
                min_p: f32::NAN,
                ..d()
            },
            "min_p",
        ),
        (
            SamplerConfig {
                repeat_penalty: 0.0,
                ..d()
            },
            "repeat_penalty",
        ),
        (
            SamplerConfig {
                repeat_penalty: f32::NAN,
                ..d()
            },
            "repeat_penalty",
        ),
        (
            SamplerConfig {
                frequency_penalty: f32::NAN,
                ..d()
            },
            "frequency_penalty",
        ),
        (
            SamplerConfig {
                presence_penalty: f32::INFINITY,
                ..d()
            },
            "presence_penalty",
        ),
        (
            SamplerConfig {
                logit_bias: vec![(1, 0.5), (7, f32::NAN)],
                ..d()
            },
            "logit_bias[7]",
        ),
        (
            SamplerConfig {
                logit_bias: vec![(3, f32::INFINITY)],
                ..d()
            },
            "logit_bias[3]",
        ),
    ];
    for (config, field) in cases {
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains(field), "{err} should name {field}");
        assert_eq!(field_of(config.clone()), field);
        // Compare messages: a NaN `value` is never == itself.
        assert_eq!(
            Sampler::new(config).err().map(|e| e.to_string()),
            Some(err.to_string())
        );
    }
}

#[test]
fn boundary_values_are_accepted() {
    let d = SamplerConfig::default;
    for config in [
        SamplerConfig {
            temperature: 0.0,
            ..d()
        },
        SamplerConfig { top_p: 1.0, ..d() },
        SamplerConfig { min_p: 0.0, ..d() },
        SamplerConfig { min_p: 1.0, ..d() },
        SamplerConfig { top_k: 0, ..d() },
        SamplerConfig {
            frequency_penalty: -2.0,
            presence_penalty: 2.0,
            ..d()
        },
        SamplerConfig {
            logit_bias: vec![(0, f32::NEG_INFINITY), (1, -100.0)],
            ..d()
        },
    ] {
        assert_eq!(config.validate(), Ok(()), "{config:?}");
    }
}
