#![no_main]
//! See `xvs_fuzz::targets::pipeline_sequence`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| xvs_fuzz::targets::pipeline_sequence(data));
