//! Print the last-token logits of a token-id prompt, one per line (for debugging
//! against other implementations): `logits MODEL.gguf ID...`.

use thaw_gguf::GgufFile;
use thaw_kernels::ThreadPool;
use thaw_models::{Logits, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: logits MODEL.gguf ID...")?;
    let ids: Vec<u32> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    let model = Model::load(&GgufFile::open(path)?)?;
    let pool = ThreadPool::new(2);
    let mut cache = model.new_cache(ids.len().max(1))?;
    let t = std::time::Instant::now();
    // THAW_INCREMENTAL=1 feeds the prompt one token at a time (the decode path).
    let logits = if std::env::var_os("THAW_INCREMENTAL").is_some() {
        let mut l = Vec::new();
        for &id in &ids {
            l = model.forward(&pool, &mut cache, &[id], Logits::Last)?;
        }
        l
    } else if std::env::var_os("THAW_ALL").is_some() {
        model.forward(&pool, &mut cache, &ids, Logits::All)?
    } else {
        model.forward(&pool, &mut cache, &ids, Logits::Last)?
    };
    eprintln!("{} tokens in {:?}", ids.len(), t.elapsed());
    for v in logits {
        println!("{v}");
    }
    Ok(())
}
