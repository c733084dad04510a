//! ConfigMap text → trace specs. Users write these, so any YAML (or not YAML at all) must end
//! in a trace or an error naming its key, never a panic.
//!
//! Input: UTF-8 (lossily) text. [`parse`] gets all of it; [`parse_configmap`] gets two keys,
//! split at the first NUL byte, or the same text twice when there is none (which exercises the
//! duplicate-name check on every valid spec).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use swoll_decode::trace::spec::{parse, parse_configmap};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse("fuzz-key", &text);

    let (first, second) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, data),
    };
    let data = BTreeMap::from([
        (
            "first.yaml".to_owned(),
            String::from_utf8_lossy(first).into_owned(),
        ),
        (
            "second.yml".to_owned(),
            String::from_utf8_lossy(second).into_owned(),
        ),
    ]);
    // Cluster-wide specs refused, as the deployed agent does.
    let (traces, errors) = parse_configmap(&data, false);
    assert!(
        traces.len() + errors.len() == data.len(),
        "parse_configmap must account for every key: {traces:?} {errors:?}"
    );
    for (_, err) in &errors {
        let _ = err.to_string();
    }
});
