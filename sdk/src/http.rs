//! Pure HTTP helpers for adapters: form encoding and decoding, Basic and Bearer
//! `Authorization` values, and header lookup. Nothing here calls the host, so all of it
//! runs (and is tested) natively.
//!
//! ```
//! use dialgate_sdk::http::{basic_auth, form_decode, form_encode};
//!
//! assert_eq!(form_encode([("To", "+14155552671"), ("Body", "Code: 1234")]),
//!            "To=%2B14155552671&Body=Code%3A+1234");
//! assert_eq!(form_decode(b"a=1&b=x+y"), [("a".to_owned(), "1".to_owned()),
//!                                        ("b".to_owned(), "x y".to_owned())]);
//! assert_eq!(basic_auth("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
//! ```

/// Encodes `fields` as `application/x-www-form-urlencoded`: bytes other than ASCII
/// letters, digits and `*-._` are percent-encoded, and spaces become `+`.
pub fn form_encode<K, V>(fields: impl IntoIterator<Item = (K, V)>) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = String::new();
    for (index, (name, value)) in fields.into_iter().enumerate() {
        if index > 0 {
            out.push('&');
        }
        encode_component(name.as_ref(), &mut out);
        out.push('=');
        encode_component(value.as_ref(), &mut out);
    }
    out
}

fn encode_component(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in text.as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0x0f)]));
            }
        }
    }
}

/// Decodes an `application/x-www-form-urlencoded` body into its fields, in order.
/// `+` is a space, `%XX` a byte; malformed escapes are kept as they are and invalid
/// UTF-8 is replaced, so decoding never fails. Empty pairs are skipped.
pub fn form_decode(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&byte| byte == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&byte| byte == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            (decode_component(name), decode_component(value))
        })
        .collect()
}

fn decode_component(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' => {
                let high = bytes.get(index + 1).and_then(|&b| hex_value(b));
                let low = bytes.get(index + 2).and_then(|&b| hex_value(b));
                if let (Some(high), Some(low)) = (high, low) {
                    out.push(high << 4 | low);
                    index += 2;
                } else {
                    out.push(b'%');
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The value of a form field, e.g. one decoded with [`form_decode`].
pub fn form_field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(field, _)| field == name)
        .map(|(_, value)| value.as_str())
}

/// The `Authorization` value for HTTP Basic authentication (RFC 7617) of `user` with
/// `password`.
pub fn basic_auth(user: &str, password: &str) -> String {
    let mut credentials = Vec::with_capacity(user.len() + password.len() + 1);
    credentials.extend_from_slice(user.as_bytes());
    credentials.push(b':');
    credentials.extend_from_slice(password.as_bytes());
    format!("Basic {}", base64(&credentials))
}

/// The `Authorization` value for a Bearer token (RFC 6750).
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Standard base64 with padding (RFC 4648, section 4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = chunk[0];
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let sextets = [
            b0 >> 2,
            (b0 & 0x03) << 4 | b1 >> 4,
            (b1 & 0x0f) << 2 | b2 >> 6,
            b2 & 0x3f,
        ];
        for (index, sextet) in sextets.iter().enumerate() {
            if index <= chunk.len() {
                out.push(char::from(ALPHABET[usize::from(*sextet)]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The first value of header `name` (compared without regard to case) in `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(header, _)| header.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Whether a `Content-Type` value names `media_type` (e.g. `application/json`),
/// ignoring case and parameters such as `charset`.
pub fn is_media_type(content_type: &str, media_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(media_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_test_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn basic_auth_follows_rfc_7617() {
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(bearer("t0k"), "Bearer t0k");
    }

    #[test]
    fn form_encoding_escapes_everything_but_the_unreserved_set() {
        assert_eq!(
            form_encode([("To", "+1 415"), ("Body", "Ünï/&=?*-._~")]),
            "To=%2B1+415&Body=%C3%9Cn%C3%AF%2F%26%3D%3F*-._%7E"
        );
        assert_eq!(form_encode(Vec::<(&str, &str)>::new()), "");
    }

    #[test]
    fn form_decoding_round_trips_and_tolerates_junk() {
        let fields = [("To", "+1 415"), ("Body", "Ünï/&=?*-._~"), ("empty", "")];
        let decoded = form_decode(form_encode(fields).as_bytes());
        let expected: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(decoded, expected);
        assert_eq!(
            form_decode(b"a=%zz&&b&c=%4"),
            [
                ("a".to_owned(), "%zz".to_owned()),
                ("b".to_owned(), String::new()),
                ("c".to_owned(), "%4".to_owned()),
            ]
        );
        assert_eq!(form_field(&decoded, "Body"), Some("Ünï/&=?*-._~"));
        assert_eq!(form_field(&decoded, "body"), None);
    }

    #[test]
    fn headers_are_found_without_regard_to_case() {
        let headers = vec![
            (
                "Content-Type".to_owned(),
                "application/json; charset=utf-8".to_owned(),
            ),
            ("content-type".to_owned(), "text/plain".to_owned()),
        ];
        let content_type = header(&headers, "CONTENT-TYPE").expect("present");
        assert!(is_media_type(content_type, "application/json"));
        assert!(!is_media_type(
            content_type,
            "application/x-www-form-urlencoded"
        ));
        assert_eq!(header(&headers, "accept"), None);
    }
}
