//! Rewrites of a JSON schema that keep its meaning but let llguidance 1.9.1 compile
//! it: `$ref` pointers with escaped segments and `format`s it does not know.

use serde_json::{Map, Value};

/// The `format`s llguidance enforces; JSON Schema makes `format` an annotation, so
/// others are dropped (as llama.cpp's schema converter ignores them) rather than
/// refused.
const KNOWN_FORMATS: &[&str] = &[
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uuid",
    "uri",
    "unknown",
];

/// `schema` with every local `$ref` whose pointer has escaped segments (`~0`, `~1`,
/// `%xx`) made to point at a copy of its target under `$defs` (llguidance looks the
/// segments up unescaped), and unknown `format`s removed.
pub(crate) fn normalize(schema: &Value) -> Value {
    let mut out = schema.clone();
    let mut copies: Vec<(String, Value)> = Vec::new();
    let mut named: Vec<(String, String)> = Vec::new();
    rewrite(&mut out, schema, &mut copies, &mut named);
    if !copies.is_empty()
        && let Value::Object(m) = &mut out
    {
        let defs = m
            .entry("$defs")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(defs) = defs {
            defs.extend(copies);
        }
    }
    out
}

/// Walks the schema positions of `v` (not `const`, `enum`, `default` or `examples`
/// values, which are data).
fn rewrite(
    v: &mut Value,
    root: &Value,
    copies: &mut Vec<(String, Value)>,
    named: &mut Vec<(String, String)>,
) {
    let Value::Object(m) = v else { return };
    if let Some(Value::String(f)) = m.get("format")
        && !KNOWN_FORMATS.contains(&f.as_str())
    {
        m.remove("format");
    }
    if let Some(Value::String(r)) = m.get_mut("$ref")
        && let Some(new) = unescaped_ref(r, root, copies, named)
    {
        *r = new;
    }
    for (k, x) in m.iter_mut() {
        match k.as_str() {
            // Maps of schemas (`dependencies` values may also be lists of names,
            // which `rewrite` leaves alone).
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas"
            | "dependencies" => {
                if let Value::Object(map) = x {
                    map.values_mut()
                        .for_each(|s| rewrite(s, root, copies, named));
                }
            }
            // A schema or a list of them (draft 4's tuple `items`).
            "anyOf"
            | "oneOf"
            | "allOf"
            | "prefixItems"
            | "items"
            | "additionalItems"
            | "additionalProperties"
            | "not"
            | "if"
            | "then"
            | "else"
            | "contains"
            | "propertyNames"
            | "unevaluatedProperties"
            | "unevaluatedItems" => match x {
                Value::Array(list) => list
                    .iter_mut()
                    .for_each(|s| rewrite(s, root, copies, named)),
                s => rewrite(s, root, copies, named),
            },
            _ => {}
        }
    }
}

/// For a local pointer with escaped segments that resolves in `root`: the name of a
/// `$defs` copy of its target (made once per pointer; the copy is rewritten too).
fn unescaped_ref(
    r: &str,
    root: &Value,
    copies: &mut Vec<(String, Value)>,
    named: &mut Vec<(String, String)>,
) -> Option<String> {
    let path = r.strip_prefix("#/")?;
    if !path.contains('~') && !path.contains('%') {
        return None;
    }
    if let Some((_, name)) = named.iter().find(|(p, _)| p == r) {
        return Some(format!("#/$defs/{name}"));
    }
    let mut target = root;
    for seg in path.split('/') {
        let seg = percent_decode(seg)?.replace("~1", "/").replace("~0", "~");
        target = match target {
            Value::Object(m) => m.get(&seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    // A name the schema's own definitions do not use.
    let taken = |n: &str| {
        root.get("$defs").and_then(|d| d.get(n)).is_some() || copies.iter().any(|(c, _)| c == n)
    };
    let mut i = named.len();
    while taken(&format!("thaw_ref{i}")) {
        i += 1;
    }
    let name = format!("thaw_ref{i}");
    named.push((r.to_string(), name.clone()));
    let mut copy = target.clone();
    rewrite(&mut copy, root, copies, named);
    copies.push((name.clone(), copy));
    Some(format!("#/$defs/{name}"))
}

/// `%xx` escapes decoded (`None` if malformed or not UTF-8).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escaped_refs_point_at_copies_and_unknown_formats_go() {
        let s = json!({
            "$defs": {"a/b": {"type": "integer"}, "c~d": {"type": "string", "format": "x-color"},
                      "e f": {"$ref": "#/$defs/a~1b"}},
            "type": "object",
            "properties": {
                "x": {"$ref": "#/$defs/a~1b"},
                "y": {"$ref": "#/$defs/c~0d"},
                "z": {"$ref": "#/$defs/e%20f"},
                "w": {"type": "string", "format": "date"},
                "format": {"const": {"$ref": "#/$defs/a~1b", "format": "kept"}}
            }
        });
        let n = normalize(&s);
        let p = &n["properties"];
        assert_eq!(p["x"]["$ref"], "#/$defs/thaw_ref0");
        assert_eq!(p["y"]["$ref"], "#/$defs/thaw_ref1");
        assert_eq!(n["$defs"]["thaw_ref0"], json!({"type": "integer"}));
        // The copy of `c~d` lost its unknown format; the original did too.
        assert_eq!(n["$defs"]["thaw_ref1"], json!({"type": "string"}));
        assert_eq!(n["$defs"]["c~d"], json!({"type": "string"}));
        // `e f` refers on to `a/b`: its copy is rewritten to the same copy.
        let z = p["z"]["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
        assert_eq!(n["$defs"][z], json!({"$ref": "#/$defs/thaw_ref0"}));
        assert_eq!(p["w"]["format"], "date");
        // Data is left alone.
        assert_eq!(
            p["format"]["const"],
            json!({"$ref": "#/$defs/a~1b", "format": "kept"})
        );
        // Nothing to do: unchanged.
        let plain = json!({"$defs": {"a": {"type": "integer"}}, "$ref": "#/$defs/a"});
        assert_eq!(normalize(&plain), plain);
        // Tuple `items`, `additionalItems` and `dependencies` are walked too, and a
        // user definition named like a copy is not overwritten.
        let s = json!({
            "$defs": {"thaw_ref0": {"const": 1}, "a/b": {"type": "integer"}},
            "type": "array",
            "items": [{"$ref": "#/$defs/a~1b"}, {"type": "string", "format": "x"}],
            "additionalItems": {"$ref": "#/$defs/a~1b"},
            "dependencies": {"k": {"properties": {"z": {"format": "y"}}}, "j": ["k"]}
        });
        let n = normalize(&s);
        assert_eq!(n["items"][0]["$ref"], "#/$defs/thaw_ref1");
        assert_eq!(n["additionalItems"]["$ref"], "#/$defs/thaw_ref1");
        assert_eq!(n["items"][1], json!({"type": "string"}));
        assert_eq!(n["dependencies"]["k"]["properties"]["z"], json!({}));
        assert_eq!(n["dependencies"]["j"], json!(["k"]));
        assert_eq!(n["$defs"]["thaw_ref0"], json!({"const": 1}));
        assert_eq!(n["$defs"]["thaw_ref1"], json!({"type": "integer"}));
        // An unresolvable pointer stays for llguidance to report.
        let bad = json!({"$ref": "#/$defs/no~1such"});
        assert_eq!(normalize(&bad), bad);
    }
}
