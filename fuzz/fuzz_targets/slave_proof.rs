#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hummel_fuzz::slave_proof(data);
});
