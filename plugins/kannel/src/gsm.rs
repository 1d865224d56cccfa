//! Which SMS coding a text needs, and how many parts it takes: GSM 03.38's default
//! alphabet (with its extension table, whose characters cost two septets) when every
//! character is in it, else UCS-2 (UTF-16 code units).

/// GSM 03.38's default alphabet, one septet each.
const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// The extension table, reached by an escape septet: two septets each.
const EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// The coding a text needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// Every character is ASCII and in GSM 03.38 (sent as it is).
    Ascii,
    /// Every character is in GSM 03.38, some outside ASCII (sent as 7-bit text, with
    /// its character set named so the gateway converts it).
    Gsm,
    /// Some character is outside GSM 03.38: UCS-2.
    Ucs2,
}

/// The coding `text` needs.
pub fn coding(text: &str) -> Coding {
    let mut coding = Coding::Ascii;
    for ch in text.chars() {
        if !(BASIC.contains(ch) || EXTENSION.contains(ch)) {
            return Coding::Ucs2;
        }
        if !ch.is_ascii() {
            coding = Coding::Gsm;
        }
    }
    coding
}

/// How many SMS parts `text` takes in its coding: one part holds 160 septets or 70
/// UCS-2 units; a longer text is split into parts of 153 septets or 67 units (the rest
/// carries the concatenation header).
pub fn segments(text: &str) -> u32 {
    let (length, single, part) = match coding(text) {
        Coding::Ucs2 => (text.encode_utf16().count(), 70, 67),
        Coding::Ascii | Coding::Gsm => (
            text.chars()
                .map(|ch| if EXTENSION.contains(ch) { 2 } else { 1 })
                .sum(),
            160,
            153,
        ),
    };
    let parts = if length <= single {
        1
    } else {
        length.div_ceil(part)
    };
    u32::try_from(parts).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alphabets_have_their_sizes() {
        assert_eq!(BASIC.chars().count(), 127, "128 minus the escape septet");
        assert_eq!(EXTENSION.chars().count(), 10);
    }

    #[test]
    fn texts_get_the_coding_they_need() {
        assert_eq!(coding("Your verification code is 123456"), Coding::Ascii);
        assert_eq!(
            coding("Ihr Code lautet 123456. Gültig: 10 Min."),
            Coding::Gsm
        );
        assert_eq!(coding("Code {123456} à 5€"), Coding::Gsm);
        assert_eq!(coding("Ваш код подтверждения: 123456"), Coding::Ucs2);
        assert_eq!(coding("您的验证码是 123456"), Coding::Ucs2);
        // Latin letters that GSM 03.38 lacks.
        assert_eq!(coding("Código ç"), Coding::Ucs2);
        assert_eq!(coding("tab\there"), Coding::Ucs2);
        assert_eq!(coding(""), Coding::Ascii);
    }

    #[test]
    fn long_texts_take_several_parts() {
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        // Extension characters cost two septets.
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        assert_eq!(segments(&"д".repeat(70)), 1);
        assert_eq!(segments(&"д".repeat(71)), 2);
        assert_eq!(segments(&"д".repeat(134)), 2);
        assert_eq!(segments(&"д".repeat(135)), 3);
        // A character outside the basic plane is two UTF-16 units.
        assert_eq!(segments(&"😀".repeat(35)), 1);
        assert_eq!(segments(&"😀".repeat(36)), 2);
    }
}
