//! Replays every input kept for every target: the corpus libFuzzer grew (`fuzz/corpus/<target>`)
//! and the inputs that once crashed a target (`fuzz/regressions/<target>`), each now fixed. Runs
//! on stable Rust with the other tests, so a decoder that starts to panic on a kept input fails CI.

use std::path::Path;

fn replay(folder: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut replayed = 0;
    for (name, target) in atlas_fuzz::TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(name)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} panics on {}", path.display());
            replayed += 1;
        }
    }
    replayed
}

#[test]
fn every_kept_corpus_input_is_handled() {
    assert!(replay("corpus") > 0, "the corpus is empty");
}

#[test]
fn every_input_that_once_crashed_a_target_is_handled_now() {
    replay("regressions");
}
