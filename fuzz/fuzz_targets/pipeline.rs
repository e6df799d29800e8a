#![no_main]
//! See `xvs_fuzz::targets::pipeline`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| xvs_fuzz::targets::pipeline(data));
