#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| qatc_fuzz::graph(data));
