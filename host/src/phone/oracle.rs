//! Agreement with libphonenumber itself: the host's port and libphonenumber's Python
//! port (same metadata version) must give the same validity, E.164, type and region for
//! every example number of every region and type, and for thousands of numbers derived
//! from them. Needs `python3` with `phonenumbers==9.0.42`; `.ci/run` installs it and
//! runs this test, which plain `cargo test` skips (it is `#[ignore]`d).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rlibphonenumber::{PhoneNumberFormat, PhoneNumberType, Region, PHONE_NUMBER_UTIL};
use strum::IntoEnumIterator;

/// Example numbers of every region and type, plus variants with other last digits and
/// with a digit dropped or added.
fn corpus() -> Vec<String> {
    let util = &*PHONE_NUMBER_UTIL;
    let mut numbers = vec!["+78005553535".to_owned(), "+14155552671".to_owned()];
    let mut seed: u64 = 0x5eed;
    for region in util.get_supported_regions() {
        for kind in PhoneNumberType::iter() {
            let Ok(example) = util.get_example_number_for_type_and_region(region, kind) else {
                continue;
            };
            let e164 = util.format(&example, PhoneNumberFormat::E164).into_owned();
            for _ in 0..12 {
                // A small linear congruential generator keeps the corpus reproducible.
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let tail = format!("{:03}", (seed >> 33) % 1000);
                let keep = e164.len().saturating_sub(3);
                numbers.push(format!("{}{tail}", &e164[..keep]));
            }
            // One digit shorter and one longer: mostly invalid, with a reason.
            numbers.push(e164[..e164.len() - 1].to_owned());
            numbers.push(format!("{e164}7"));
            numbers.push(e164);
        }
        if let Ok(invalid) = util.get_invalid_example_number(region) {
            numbers.push(util.format(&invalid, PhoneNumberFormat::E164).into_owned());
        }
    }
    numbers.sort();
    numbers.dedup();
    numbers
}

fn ours(raw: &str) -> serde_json::Value {
    let util = &*PHONE_NUMBER_UTIL;
    let Ok(number) = util.parse(raw, None) else {
        return serde_json::json!([raw, false, false, null, null, null]);
    };
    let region = util
        .get_region_for_number(&number)
        .filter(|r| *r != Region::World)
        .map(|r| r.as_region_str().as_str().to_owned());
    let parsed = super::parse(raw, None)
        .expect("no country hint")
        .expect("parses when the port parses");
    serde_json::json!([
        raw,
        true,
        parsed.is_valid(),
        parsed.e164,
        format!("{:?}", util.get_number_type(&number)),
        region,
    ])
}

#[test]
#[ignore = "needs python3 with phonenumbers==9.0.42; .ci/run installs it and runs this test"]
fn agrees_with_libphonenumber_python_on_examples_and_variants() {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/oracle/libphonenumber.py");
    let numbers = corpus();
    assert!(numbers.len() > 15_000, "corpus of {}", numbers.len());
    let mut child = Command::new("python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs; install it and phonenumbers==9.0.42");
    // Feed stdin from another thread: the oracle answers while it reads, and a full
    // stdout pipe would otherwise stall both sides.
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = numbers.join("\n");
    let feeder = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("the oracle finishes");
    feeder
        .join()
        .expect("the feeder thread ends")
        .expect("write to the oracle");
    assert!(
        output.status.success(),
        "the oracle failed: {}",
        output.status
    );
    let answers: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON array per line"))
        .collect();
    assert_eq!(answers.len(), numbers.len());
    let disagreements: Vec<String> = answers
        .iter()
        .filter_map(|theirs| {
            let raw = theirs[0].as_str().expect("input echoed");
            let mine = ours(raw);
            (mine != *theirs).then(|| format!("libphonenumber {theirs} vs ours {mine}"))
        })
        .collect();
    let valid = answers.iter().filter(|a| a[2] == true).count();
    println!(
        "{} numbers compared, {valid} valid, {} disagreements",
        numbers.len(),
        disagreements.len()
    );
    assert!(
        disagreements.is_empty(),
        "{} of {} disagree, e.g.:\n{}",
        disagreements.len(),
        numbers.len(),
        disagreements
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
