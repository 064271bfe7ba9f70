//! Fuzzes the rule parser: YAML bytes → a route's `map:` → compile. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mapping::fuzzing::compile_yaml(data));
