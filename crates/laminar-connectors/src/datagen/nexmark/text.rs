//! The text of Nexmark events: the Java generator's name, city and state tables, its random
//! strings and `extra` padding, and the channel table of bids. Strings are written into a
//! reused buffer so that generating a row allocates nothing.

use std::fmt::Write as _;

use super::super::rng::SplitMix64;

/// First names of persons.
pub(crate) const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
/// Last names of persons.
pub(crate) const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
/// States of persons.
pub(crate) const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
/// Cities of persons.
pub(crate) const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
/// The channels most bids come through.
pub(crate) const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// Number of other channels (`channel-0` .. `channel-9999`).
pub(crate) const CHANNELS: usize = 10_000;

/// Average serialized sizes the `extra` column pads events to, as in the Java generator.
pub(crate) const PERSON_BYTES_AVG: usize = 200;
/// See [`PERSON_BYTES_AVG`].
pub(crate) const AUCTION_BYTES_AVG: usize = 500;
/// See [`PERSON_BYTES_AVG`].
pub(crate) const BID_BYTES_AVG: usize = 100;

const LETTERS: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";
/// Shortest random string.
const STRING_LEN_MIN: u64 = 3;

/// Appends a string of 3 to `len_max - 1` characters: lowercase letters, and `special` with
/// probability 1/13; leading and trailing spaces are trimmed, as in the Java generator.
pub(crate) fn push_string(out: &mut String, rng: &mut SplitMix64, len_max: u64, special: char) {
    let len = STRING_LEN_MIN + rng.below(len_max.saturating_sub(STRING_LEN_MIN).max(1));
    let start = out.len();
    for _ in 0..len {
        let draw = rng.below(26 * 13);
        if draw < 26 {
            out.push(special);
        } else {
            out.push(char::from(LETTERS[(draw % 26) as usize]));
        }
    }
    if special == ' ' {
        let end = start + out[start..].trim_end().len();
        out.truncate(end);
        let leading = out[start..].len() - out[start..].trim_start().len();
        out.drain(start..start + leading);
    }
}

/// Appends exactly `len` lowercase letters, 13 per 64 random bits.
pub(crate) fn push_letters(out: &mut String, rng: &mut SplitMix64, len: usize) {
    let mut left = len;
    while left > 0 {
        let mut bits = rng.next_u64();
        for _ in 0..left.min(13) {
            out.push(char::from(LETTERS[(bits % 26) as usize]));
            bits /= 26;
        }
        left = left.saturating_sub(13);
    }
}

/// Appends the `extra` padding of an event whose other fields take `size` bytes, so events
/// average `size_avg` bytes: nothing if already larger, else `size_avg - size` letters ±20%.
pub(crate) fn push_extra(out: &mut String, rng: &mut SplitMix64, size: usize, size_avg: usize) {
    if size >= size_avg {
        return;
    }
    let wanted = size_avg - size;
    let delta = (wanted as f64 * 0.2).round() as usize;
    let len = wanted - delta + rng.below(2 * delta as u64) as usize;
    push_letters(out, rng, len);
}

/// Appends a credit card number: four groups of four digits.
pub(crate) fn push_credit_card(out: &mut String, rng: &mut SplitMix64) {
    for group in 0..4 {
        if group > 0 {
            out.push(' ');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{:04}", rng.below(10_000));
    }
}

/// Appends an e-mail address: `name@domain.com`.
pub(crate) fn push_email(out: &mut String, rng: &mut SplitMix64) {
    push_string(out, rng, 7, ' ');
    out.push('@');
    push_string(out, rng, 5, ' ');
    out.push_str(".com");
}

/// Appends a bid URL: `https://www.nexmark.com/<a>/<b>/<c>/item.htm?query=1`.
fn push_url(out: &mut String, rng: &mut SplitMix64) {
    out.push_str("https://www.nexmark.com/");
    for _ in 0..3 {
        push_string(out, rng, 5, '_');
        out.push('/');
    }
    out.push_str("item.htm?query=1");
}

/// Channel names and URLs of bids, built once per bid reader from the seed.
#[derive(Debug)]
pub(crate) struct ChannelTable {
    /// URL of each hot channel.
    pub(crate) hot_urls: Vec<String>,
    /// `channel-<k>` for each other channel.
    pub(crate) names: Vec<String>,
    /// URL of each other channel; nine in ten carry `&channel_id=`.
    pub(crate) urls: Vec<String>,
}

impl ChannelTable {
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x6368_616E_6E65_6C73);
        let url = |rng: &mut SplitMix64| {
            let mut out = String::with_capacity(64);
            push_url(&mut out, rng);
            out
        };
        let hot_urls = HOT_CHANNELS.iter().map(|_| url(&mut rng)).collect();
        let mut names = Vec::with_capacity(CHANNELS);
        let mut urls = Vec::with_capacity(CHANNELS);
        for channel in 0..CHANNELS {
            names.push(format!("channel-{channel}"));
            let mut channel_url = url(&mut rng);
            if rng.below(10) > 0 {
                let id = (channel as u32).reverse_bits() as i32;
                let _ = write!(channel_url, "&channel_id={}", id.unsigned_abs());
            }
            urls.push(channel_url);
        }
        Self {
            hot_urls,
            names,
            urls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_have_the_documented_shapes() {
        let mut rng = SplitMix64::new(1);
        for _ in 0..200 {
            let mut s = String::new();
            push_string(&mut s, &mut rng, 20, ' ');
            assert!(s.len() < 20 && s == s.trim(), "{s:?}");
            let mut card = String::new();
            push_credit_card(&mut card, &mut rng);
            assert_eq!(card.len(), 19);
            let mut extra = String::new();
            push_extra(&mut extra, &mut rng, 32, BID_BYTES_AVG);
            assert!((54..=82).contains(&extra.len()), "{}", extra.len());
        }
        let table = ChannelTable::new(0);
        assert_eq!(table.names[42], "channel-42");
        assert!(table.urls[42].starts_with("https://www.nexmark.com/"));
    }
}
