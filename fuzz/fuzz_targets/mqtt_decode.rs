//! MQTT 3.1.1 decoder: no input panics; whatever decodes re-encodes to bytes that decode to the
//! same packet; every strict prefix of a decoded packet asks for more bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_codec::{decode, encode};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the size limit, so the too-large path is exercised as well.
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let max = 16usize << (limit % 16);
    let mut buf = rest;
    while let Ok(Some((packet, used))) = decode(buf, max) {
        assert!(used > 0 && used <= buf.len() && used <= max);
        for cut in 0..used {
            assert_eq!(decode(&buf[..cut], max), Ok(None), "prefix {cut} of {used}");
        }
        let mut again = Vec::new();
        encode(&packet, &mut again).expect("a decoded packet encodes");
        assert_eq!(decode(&again, usize::MAX), Ok(Some((packet, again.len()))));
        buf = &buf[used..];
    }
});
