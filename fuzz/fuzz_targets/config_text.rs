//! Any text as `config/roster.toml`: it is read into a config or refused with sentences that
//! name what is wrong, never a panic (`roster check-config` and a reload read it so).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match roster::config::Config::parse(text) {
        Ok(config) => {
            let _ = roster::config::tenantless(text, &config);
        }
        Err(problems) => assert!(!problems.is_empty(), "refused without a reason"),
    }
});
