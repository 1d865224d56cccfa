"""Classify phone numbers with libphonenumber's Python port (package phonenumbers).

Used by Dialgate's agreement test (host/src/phone/oracle.rs). It reads one E.164 number
per line on stdin and writes one JSON array per line on stdout:
[input, parsed, valid, e164, type, region]. The metadata version must match the one the
host's libphonenumber port ships, so the script refuses any other package version.
"""

import json
import sys

import phonenumbers
from phonenumbers import PhoneNumberType as T

EXPECTED_VERSION = "9.0.42"

TYPE_NAMES = {
    T.FIXED_LINE: "FixedLine",
    T.MOBILE: "Mobile",
    T.FIXED_LINE_OR_MOBILE: "FixedLineOrMobile",
    T.TOLL_FREE: "TollFree",
    T.PREMIUM_RATE: "PremiumRate",
    T.SHARED_COST: "SharedCost",
    T.VOIP: "VoIP",
    T.PERSONAL_NUMBER: "PersonalNumber",
    T.PAGER: "Pager",
    T.UAN: "UAN",
    T.VOICEMAIL: "VoiceMail",
    T.UNKNOWN: "Unknown",
}


def classify(raw):
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return [raw, False, False, None, None, None]
    region = phonenumbers.region_code_for_number(number)
    return [
        raw,
        True,
        phonenumbers.is_valid_number(number),
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        TYPE_NAMES[phonenumbers.number_type(number)],
        None if region in (None, "001", "ZZ") else region,
    ]


def main():
    if phonenumbers.__version__ != EXPECTED_VERSION:
        sys.exit(
            f"phonenumbers {phonenumbers.__version__} is installed; the agreement test "
            f"needs {EXPECTED_VERSION} (pip install phonenumbers=={EXPECTED_VERSION})"
        )
    for line in sys.stdin:
        raw = line.strip()
        if raw:
            print(json.dumps(classify(raw)))


if __name__ == "__main__":
    main()
