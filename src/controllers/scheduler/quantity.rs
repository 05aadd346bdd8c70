//! Kubernetes resource quantities (`500m`, `2`, `1Gi`, `128974848`, `1e3`,
//! `1.5G`) parsed into thousandths of a unit, exact for the suffixes
//! upstream accepts.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
pub struct QuantityError(pub String);

/// The quantity in milli-units (`500m` → 500, `1Ki` → 1 024 000).
pub fn parse_milli(text: &str) -> Result<i128, QuantityError> {
    let err = || QuantityError(text.to_string());
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() {
        return Err(err());
    }
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() || !whole.chars().chain(fraction.chars()).all(|c| c.is_ascii_digit()) {
        return Err(err());
    }
    // The number as an integer mantissa times 10^-scale.
    let mantissa: i128 = format!("{whole}{fraction}").parse().map_err(|_| err())?;
    let scale = fraction.len() as u32;
    let (multiplier, exponent): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        s if s.starts_with(['e', 'E']) => (1, s[1..].parse::<i32>().map_err(|_| err())?),
        _ => return Err(err()),
    };
    // milli = mantissa * multiplier * 10^(exponent + 3 - scale), rounded up like upstream.
    let power = exponent + 3 - scale as i32;
    let value = mantissa.checked_mul(multiplier).ok_or_else(err)?;
    let milli = if power >= 0 {
        value.checked_mul(10i128.checked_pow(power as u32).ok_or_else(err)?).ok_or_else(err)?
    } else {
        let divisor = 10i128.checked_pow((-power) as u32).ok_or_else(err)?;
        (value + divisor - 1) / divisor
    };
    Ok(if negative { -milli } else { milli })
}

/// A quantity in whole units, as the JSON value of a resource list entry.
pub fn milli_of(value: &serde_json::Value) -> Option<i128> {
    match value {
        serde_json::Value::String(s) => parse_milli(s).ok(),
        serde_json::Value::Number(n) => n.as_f64().map(|f| (f * 1000.0).ceil() as i128),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_and_binary_suffixes() {
        assert_eq!(parse_milli("500m"), Ok(500));
        assert_eq!(parse_milli("2"), Ok(2000));
        assert_eq!(parse_milli("0.5"), Ok(500));
        assert_eq!(parse_milli("1Ki"), Ok(1_024_000));
        assert_eq!(parse_milli("1Gi"), Ok(1_073_741_824_000));
        assert_eq!(parse_milli("128974848"), Ok(128_974_848_000));
        assert_eq!(parse_milli("129M"), Ok(129_000_000_000));
        assert_eq!(parse_milli("1e3"), Ok(1_000_000));
        assert_eq!(parse_milli("1.5Gi"), Ok(1_610_612_736_000));
        assert_eq!(parse_milli("100n"), Ok(1));
        assert_eq!(parse_milli("-1"), Ok(-1000));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "1x", "Gi", "1.2.3", "."] {
            assert!(parse_milli(bad).is_err(), "{bad}");
        }
    }
}
