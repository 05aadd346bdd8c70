//! Golden-text tests: the full transaction rendered for a few realistic
//! states, compared with tests/golden/netfilter/<state>.json
//! (`UPDATE_GOLDEN=1` rewrites them; review the diff).

use super::fixtures;
use super::state::ProxyState;
use std::path::PathBuf;

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/netfilter").join(format!("{name}.json"))
}

#[test]
fn full_transactions_match_the_golden_files() {
    let mut mismatched = Vec::new();
    for (name, services, slices) in fixtures::scenarios() {
        let mut state = ProxyState::new(fixtures::config());
        state.replace_services(services);
        state.replace_slices(slices);
        let tx = state.plan().expect("a first plan is a full transaction");
        assert!(tx.full);
        let rendered = tx.to_json_pretty().expect("encode") + "\n";
        let path = golden_path(name);
        if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
            std::fs::write(&path, &rendered).expect("write golden file");
            continue;
        }
        let golden = std::fs::read_to_string(&path).unwrap_or_default();
        if golden != rendered {
            mismatched.push(format!("{}:\n{rendered}", path.display()));
        }
    }
    assert!(
        mismatched.is_empty(),
        "rendered rules differ from the golden files (UPDATE_GOLDEN=1 to accept):\n{}",
        mismatched.join("\n")
    );
}
