//! Fuzzes the applier: `rules YAML \0 body \0 query` → compile, apply to a request and a
//! response. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mapping::fuzzing::apply(data));
