#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| msgbatch::fuzz::partial_json(data));
