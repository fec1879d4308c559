//! Writes the valid seed inputs of every fuzz target into `fuzz/corpus/<target>/` (files named
//! by their BLAKE3, so running it again adds nothing).

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut written = 0;
    for (target, bytes) in atlas_fuzz::seeds() {
        let dir = root.join(target);
        let path = dir.join(blake3::hash(&bytes).to_hex().as_str());
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &bytes)) {
            eprintln!("error: {}: {e}", path.display());
            std::process::exit(1);
        }
        written += 1;
    }
    println!("{written} seeds in {}", root.display());
}
