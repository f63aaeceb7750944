//! Kubernetes resource quantities (`500m`, `1.5Gi`, `129e6`), exactly, for the downward API.
//!
//! The kubelet turns `resourceFieldRef` into text as the ceiling of `quantity / divisor`.
//! Older kubelets did that in floating point after rounding each side up to whole units
//! (millicores for CPU); newer ones divide exact decimals. For every quantity the API accepts
//! and every divisor it allows (`1m`, `1`, `1k`, `1Mi`, ...) both give the same integer, which
//! is the exact ceiling computed here with integers.

use std::fmt;

/// `mantissa × 10^exp10 × 2^exp2`, with a sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

/// Why a quantity cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuantityError(String);

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Quantity {
    pub(crate) const ONE: Quantity = Quantity {
        negative: false,
        mantissa: 1,
        exp10: 0,
        exp2: 0,
    };

    /// Parses the canonical grammar: a signed decimal number, then one suffix out of the
    /// decimal SI ones (`n u m "" k M G T P E`), the binary SI ones (`Ki` .. `Ei`) or a
    /// decimal exponent (`e3`, `E-2`).
    pub(crate) fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let bad = || QuantityError(format!("{text:?} is not a quantity"));
        let (negative, unsigned) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_len = unsigned
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(unsigned.len());
        let (number, suffix) = unsigned.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(bad());
        }
        let (exp10, exp2) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            exponent => {
                let digits = exponent
                    .strip_prefix(['e', 'E'])
                    .filter(|d| {
                        let d = d.strip_prefix(['+', '-']).unwrap_or(d);
                        !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
                    })
                    .ok_or_else(bad)?;
                (digits.parse::<i32>().map_err(|_| bad())?, 0)
            }
        };
        // Leading zeros carry nothing; the digits left must fit the mantissa.
        let digits: String = whole.chars().chain(fraction.chars()).collect();
        let significant = digits.trim_start_matches('0');
        let mantissa = if significant.is_empty() {
            0
        } else {
            significant
                .parse::<u128>()
                .map_err(|_| QuantityError(format!("{text:?} has too many digits")))?
        };
        let scale = i32::try_from(fraction.len()).map_err(|_| bad())?;
        Ok(Quantity {
            negative,
            mantissa,
            exp10: exp10.checked_sub(scale).ok_or_else(bad)?,
            exp2,
        })
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    fn is_positive(&self) -> bool {
        !self.negative && self.mantissa != 0
    }

    /// The kubelet's text for `self` in units of `divisor`: the ceiling of the ratio, `0`
    /// for a quantity that is not positive, saturating at the largest 64-bit integer.
    pub(crate) fn ceil_div(&self, divisor: &Quantity) -> Result<String, QuantityError> {
        if !self.is_positive() || !divisor.is_positive() {
            return Ok("0".into());
        }
        let overflow = || QuantityError("the quantity and divisor are too far apart".into());
        let mut num = self.mantissa;
        let mut den = divisor.mantissa;
        let tens = i64::from(self.exp10) - i64::from(divisor.exp10);
        let twos = i64::from(self.exp2) - i64::from(divisor.exp2);
        let scale = |value: u128, base: u128, power: i64| -> Option<u128> {
            let power = u32::try_from(power).ok()?;
            value.checked_mul(base.checked_pow(power)?)
        };
        if tens >= 0 {
            num = scale(num, 10, tens).ok_or_else(overflow)?;
        } else {
            den = scale(den, 10, -tens).ok_or_else(overflow)?;
        }
        if twos >= 0 {
            num = scale(num, 2, twos).ok_or_else(overflow)?;
        } else {
            den = scale(den, 2, -twos).ok_or_else(overflow)?;
        }
        let ceiling = num.div_ceil(den);
        Ok(i64::try_from(ceiling).unwrap_or(i64::MAX).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::Quantity;

    fn ceil(q: &str, d: &str) -> String {
        let q = Quantity::parse(q).expect("quantity");
        let d = Quantity::parse(d).expect("divisor");
        q.ceil_div(&d).expect("ratio")
    }

    #[test]
    fn parses_the_api_grammar() {
        for ok in [
            "0", "1", "+1", "-1", "1.5", ".5", "5.", "500m", "100n", "3u", "1k", "2M", "1G", "1T",
            "1P", "1E", "1Ki", "1.5Gi", "8Ei", "129e6", "1E3", "1e-3", "1e+3", "007",
        ] {
            assert!(Quantity::parse(ok).is_ok(), "{ok:?} should parse");
        }
        for bad in [
            "", ".", "-", "1.2.3", "1 ", " 1", "1x", "1KI", "1ki", "e3", "1e", "1e+", "1Gi5",
            "1.5.Gi", "--1", "abc",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(Quantity::parse("0.000").expect("zero").is_zero());
    }

    /// What the kubelet prints for `resourceFieldRef` (values from its own tests and docs).
    #[test]
    fn divides_with_the_kubelets_rounding() {
        let cases = [
            // CPU: cores by default, or millicores with divisor 1m.
            ("250m", "1", "1"),
            ("2", "1", "2"),
            ("1.5", "1", "2"),
            ("250m", "1m", "250"),
            ("0.1", "1m", "100"),
            ("1", "1m", "1000"),
            ("100n", "1m", "1"),
            // Memory: bytes by default, rounded up in the unit of the divisor.
            ("64Mi", "1", "67108864"),
            ("64Mi", "1Mi", "64"),
            ("64M", "1Mi", "62"),
            ("1Gi", "1M", "1074"),
            ("128974848", "1", "128974848"),
            ("129e6", "1Mi", "124"),
            ("123Mi", "1Gi", "1"),
            ("1.5k", "1Ki", "2"),
            ("0.5", "1", "1"),
            ("4Gi", "1k", "4294968"),
            // Nothing to expose.
            ("0", "1", "0"),
            ("-1", "1", "0"),
            // Beyond a 64-bit integer the kubelet saturates.
            ("8Ei", "1n", "9223372036854775807"),
        ];
        for (q, d, want) in cases {
            assert_eq!(ceil(q, d), want, "{q} / {d}");
        }
    }
}
