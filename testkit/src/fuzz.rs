//! A mutation fuzzer for the parsers that take outside bytes. It starts from real samples (the
//! seeds), changes them at the byte level and, for seeds that are JSON, at the value level
//! (a field of another type, a huge number, a deep array), and feeds each result to a target.
//! A run is reproducible from the seed it prints, bounded in time, and stops at the first
//! input that panics, printing it as a Rust literal to paste into a regression test.
//!
//! No coverage guidance (the toolchain here has no nightly for `cargo fuzz`): the value-level
//! mutations are what reach past the JSON syntax into the parsers' own rules.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long each target runs unless `JOBWARDEN_FUZZ_SECONDS` says otherwise.
pub const DEFAULT_SECONDS: f64 = 5.0;

/// Inputs never grow past this many bytes: the parsers' size limits are tested elsewhere.
const MAX_LEN: usize = 256 * 1024;

/// SplitMix64: small, fast and good enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Byte strings that parsers tend to treat specially.
const TOKENS: &[&[u8]] = &[
    b"null",
    b"true",
    b"{}",
    b"[]",
    b"\"",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"1e999",
    b"-0",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"0.000000000000000000000000000001",
    b"<",
    b"</td>",
    b"<td>",
    b"<tr>",
    b"&amp;",
    b"\n",
    b"\r\n",
    b"\x00",
    b"\xff\xfe",
    b"\xe2\x82",
    b"=",
    b"[[",
    b"]]",
    b"#",
    b"'''",
];

/// Values of every JSON type, including the awkward ones.
fn any_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 9 } else { 12 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(2)),
        2 => Value::from(rng.next_u64() as i64),
        3 => Value::from(*rng.pick(&[0.0, -1.0, 0.5, 1e308, -1e-308, 100.0001, 101.0])),
        4 => Value::from(*rng.pick(&[u64::MAX, 0, 100, 101, 255, 256, 65536])),
        5 => Value::String(String::new()),
        6 => Value::String(
            (*rng.pick(&[
                "RUNNING",
                "FINISHED",
                "FAILED",
                "KILLED",
                "ERROR",
                "SUBMITTED",
                "UNKNOWN",
                "Completed",
                "Failed",
                "Processing",
                "Pending",
                "ALIVE",
                "STANDBY",
                "driver-20261129044149-0000",
                "2026-11-28T10:00:00Z",
                "2026-13-45T99:00:00Z",
                "1732780800000",
                "-1",
                "None",
                "\u{0}",
                "é😀\u{202e}",
                "http://127.0.0.1:1/",
                "not a url",
            ]))
            .to_owned(),
        ),
        7 => Value::String("x".repeat(rng.below(5_000))),
        8 => Value::String(format!("{}", rng.next_u64())),
        9 => Value::Array(
            (0..rng.below(4))
                .map(|_| any_value(rng, depth + 1))
                .collect(),
        ),
        10 => Value::Object(
            (0..rng.below(4))
                .map(|i| (format!("k{i}"), any_value(rng, depth + 1)))
                .collect(),
        ),
        _ => {
            let mut nested = Value::Null;
            for _ in 0..rng.below(64) {
                nested = Value::Array(vec![nested]);
            }
            nested
        }
    }
}

/// Every node of a JSON value, by path of indices (object members by position).
fn nodes(value: &Value, path: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    out.push(path.clone());
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(i);
                nodes(item, path, out);
                path.pop();
            }
        }
        Value::Object(members) => {
            for (i, (_, item)) in members.iter().enumerate() {
                path.push(i);
                nodes(item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(value: &'a mut Value, path: &[usize]) -> &'a mut Value {
    match path.split_first() {
        None => value,
        Some((i, rest)) => match value {
            Value::Array(items) => node_mut(&mut items[*i], rest),
            Value::Object(members) => {
                let key = members.keys().nth(*i).cloned().unwrap_or_default();
                node_mut(members.get_mut(&key).expect("a listed member"), rest)
            }
            other => other,
        },
    }
}

/// One value-level change: a node replaced, a member dropped or renamed, an array's items
/// duplicated.
fn mutate_value(value: &mut Value, rng: &mut Rng) {
    let mut all = Vec::new();
    nodes(value, &mut Vec::new(), &mut all);
    let path = rng.pick(&all).clone();
    let node = node_mut(value, &path);
    match (rng.below(4), node) {
        (0, Value::Object(members)) if !members.is_empty() => {
            let key = members.keys().nth(rng.below(members.len())).cloned();
            if let Some(key) = key {
                let taken = members.remove(&key);
                if rng.chance(2) {
                    if let Some(taken) = taken {
                        let renamed = match rng.below(3) {
                            0 => key.to_uppercase(),
                            1 => format!("{key}_"),
                            _ => key.to_lowercase(),
                        };
                        members.insert(renamed, taken);
                    }
                }
            }
        }
        (1, Value::Array(items)) if !items.is_empty() => {
            let copy = items[rng.below(items.len())].clone();
            for _ in 0..rng.below(50) {
                items.push(copy.clone());
            }
        }
        (_, node) => *node = any_value(rng, path.len()),
    }
}

/// One byte-level change, sometimes taking a piece of another seed.
fn mutate_bytes(data: &mut Vec<u8>, rng: &mut Rng, seeds: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(8) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.next_u64() as u8;
        }
        2 => {
            let token = rng.pick(TOKENS);
            let at = rng.below(len + 1);
            data.splice(at..at, token.iter().copied());
        }
        3 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(64)).min(len);
            data.drain(start..end);
        }
        4 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(64)).min(len);
            let piece = data[start..end].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, piece);
        }
        5 if len > 0 => data.truncate(rng.below(len)),
        6 => {
            let other = rng.pick(seeds);
            if !other.is_empty() {
                let start = rng.below(other.len());
                let end = (start + 1 + rng.below(256)).min(other.len());
                let at = rng.below(len + 1);
                data.splice(at..at, other[start..end].iter().copied());
            }
        }
        _ => {
            let at = rng.below(len + 1);
            let random: Vec<u8> = (0..1 + rng.below(8))
                .map(|_| rng.next_u64() as u8)
                .collect();
            data.splice(at..at, random);
        }
    }
    data.truncate(MAX_LEN);
}

/// The mutator: seeds, and how to derive the next input from them.
#[derive(Debug, Clone)]
pub struct Mutator {
    seeds: Vec<Vec<u8>>,
    json: Vec<Option<Value>>,
}

impl Mutator {
    pub fn new(seeds: Vec<Vec<u8>>) -> Mutator {
        assert!(!seeds.is_empty(), "a fuzz target needs at least one seed");
        let json = seeds
            .iter()
            .map(|s| serde_json::from_slice::<Value>(s).ok())
            .collect();
        Mutator { seeds, json }
    }

    /// The next input: a seed unchanged now and then, else a few mutations of one.
    pub fn next(&self, rng: &mut Rng) -> Vec<u8> {
        let i = rng.below(self.seeds.len());
        if rng.chance(50) {
            return self.seeds[i].clone();
        }
        let mut data = match &self.json[i] {
            Some(value) if rng.chance(2) => {
                let mut value = value.clone();
                for _ in 0..1 + rng.below(3) {
                    mutate_value(&mut value, rng);
                }
                serde_json::to_vec(&value).unwrap_or_default()
            }
            _ => self.seeds[i].clone(),
        };
        if self.json[i].is_none() || rng.chance(3) {
            for _ in 0..1 + rng.below(4) {
                mutate_bytes(&mut data, rng, &self.seeds);
            }
        }
        data
    }
}

/// What one run did, for the log and the README's figures.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: String,
    pub executions: u64,
    pub elapsed: Duration,
    pub seed: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz {}: {} executions in {:.1}s ({:.0}/s), seed {}, no panic",
            self.target,
            self.executions,
            self.elapsed.as_secs_f64(),
            self.executions as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.seed
        )
    }
}

/// The time budget and the starting seed, from the environment when set.
#[derive(Debug, Clone)]
pub struct Budget {
    pub time: Duration,
    pub seed: u64,
}

impl Budget {
    /// `JOBWARDEN_FUZZ_SECONDS` (default [`DEFAULT_SECONDS`]) and `JOBWARDEN_FUZZ_SEED`
    /// (default: from the clock, printed so a failure can be replayed).
    pub fn from_env() -> Budget {
        let seconds = std::env::var("JOBWARDEN_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(DEFAULT_SECONDS);
        let seed = std::env::var("JOBWARDEN_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        Budget {
            time: Duration::from_secs_f64(seconds),
            seed,
        }
    }
}

/// The input as a Rust byte-string literal, to paste into a regression test.
pub fn literal(input: &[u8]) -> String {
    let mut out = String::from("b\"");
    for &b in input {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

/// Runs `target` on mutated inputs until the budget is spent; panics, naming the input, the
/// seed and the target's own panic message, at the first input the target panics on.
pub fn run(
    name: &str,
    seeds: Vec<Vec<u8>>,
    budget: &Budget,
    mut target: impl FnMut(&[u8]),
) -> Report {
    let mutator = Mutator::new(seeds);
    let mut rng = Rng::new(budget.seed);
    let started = Instant::now();
    let mut executions = 0u64;
    while started.elapsed() < budget.time || executions == 0 {
        let input = mutator.next(&mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
        executions += 1;
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(no message)".into());
            panic!(
                "fuzz {name}: input {} panicked after {executions} executions: {message}\n\
                 replay with JOBWARDEN_FUZZ_SEED={}",
                literal(&input),
                budget.seed
            );
        }
    }
    Report {
        target: name.to_owned(),
        executions,
        elapsed: started.elapsed(),
        seed: budget.seed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let mutator = Mutator::new(vec![
            br#"{"a":[1,2,{"b":"c"}]}"#.to_vec(),
            b"plain".to_vec(),
        ]);
        let (mut one, mut two) = (Rng::new(7), Rng::new(7));
        for _ in 0..200 {
            assert_eq!(mutator.next(&mut one), mutator.next(&mut two));
        }
    }

    #[test]
    fn json_seeds_are_changed_at_the_value_level_too() {
        let mutator = Mutator::new(vec![br#"{"driverState":"RUNNING","success":true}"#.to_vec()]);
        let mut rng = Rng::new(1);
        let still_json_but_changed = (0..500)
            .map(|_| mutator.next(&mut rng))
            .filter(|input| serde_json::from_slice::<Value>(input).is_ok())
            .filter(|input| input.as_slice() != br#"{"driverState":"RUNNING","success":true}"#)
            .count();
        assert!(still_json_but_changed > 100, "{still_json_but_changed}");
    }

    #[test]
    fn a_panicking_target_is_reported_with_its_input() {
        let budget = Budget {
            time: Duration::from_secs(5),
            seed: 3,
        };
        let caught = catch_unwind(|| {
            run("x", vec![b"abc".to_vec()], &budget, |input| {
                assert!(!input.is_empty() && input != b"abc", "the seed itself");
            })
        });
        let message = caught.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("fuzz x: input b\""), "{message}");
        assert!(message.contains("JOBWARDEN_FUZZ_SEED=3"), "{message}");
    }

    #[test]
    fn a_literal_escapes_what_is_not_printable() {
        assert_eq!(literal(b"a\"\\\n\xff"), r#"b"a\"\\\n\xff""#);
    }
}
