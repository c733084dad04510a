//! `/proc/<pid>/cgroup` text → the container and pod it names. The text comes from processes
//! the agent does not control (a container can create any cgroup name it likes), so parsing
//! must never panic, and what it returns must keep the module's documented forms.
//!
//! Input: UTF-8 (lossily) text, given both as one cgroup path and as a whole cgroup file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swoll_decode::cgroup::{ContainerRef, from_path, from_proc_cgroup};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for found in [from_path(&text), from_proc_cgroup(&text)]
        .into_iter()
        .flatten()
    {
        check(&found);
    }
});

/// The forms `resolver::cgroup` documents: a 64-lowercase-hex id, a dashed lowercase UID.
fn check(found: &ContainerRef) {
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    assert!(
        found.id.len() == 64 && found.id.bytes().all(lower_hex),
        "container id is not 64 lowercase hex: {found:?}"
    );
    assert_eq!(found.short_id(), &found.id[..12]);
    if let Some(uid) = &found.pod_uid {
        let dashed = uid.len() == 36
            && uid.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => lower_hex(b),
            });
        assert!(
            dashed,
            "pod UID is not dashed lowercase 8-4-4-4-12: {found:?}"
        );
    }
}
