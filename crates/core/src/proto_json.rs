//! Reading fields the way protobuf's proto3 JSON mapping writes them, which is how Titus' own
//! code and clients print job descriptors: 64-bit integers as strings (`"runtimeLimitSec": "60"`),
//! `null` for a field left at its default, enums by name or by number.
//!
//! Each function is a serde `deserialize_with` for one field type. A field that is absent takes
//! its `#[serde(default)]`; one that is `null` takes the type's zero value, as proto3 does.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A whole number within `0..=max`, as a JSON number (`5`, `5.0`) or a string (`"5"`).
struct Whole {
    max: u64,
    expected: &'static str,
}

impl<'de> Visitor<'de> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<u64, E> {
        if value > self.max {
            return Err(E::custom(format!(
                "{value} is too large, expected {}",
                self.expected
            )));
        }
        Ok(value)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<u64, E> {
        match u64::try_from(value) {
            Ok(value) => self.visit_u64(value),
            Err(_) => Err(E::custom(format!(
                "{value} is negative, expected {}",
                self.expected
            ))),
        }
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<u64, E> {
        // proto3 parsers take `5.0` and `5e2` for an integer field, not `5.5`.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        if value.is_finite() && value.fract() == 0.0 && value >= 0.0 && value <= self.max as f64 {
            return Ok(value as u64);
        }
        Err(E::custom(format!(
            "{value} is not a whole number in range, expected {}",
            self.expected
        )))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
        let trimmed = text.trim();
        if let Ok(value) = trimmed.parse::<u64>() {
            return self.visit_u64(value);
        }
        if let Ok(value) = trimmed.parse::<f64>() {
            if trimmed
                .chars()
                .all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
            {
                return self.visit_f64(value);
            }
        }
        Err(E::custom(format!(
            "{} is not a number, expected {}",
            crate::validation::quoted(text),
            self.expected
        )))
    }

    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_none<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }
}

/// A `uint32` field.
pub fn u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = deserializer.deserialize_any(Whole {
        max: u64::from(u32::MAX),
        expected: "a whole number from 0 to 4294967295 (a JSON number or a string of digits)",
    })?;
    Ok(u32::try_from(value).unwrap_or(u32::MAX))
}

/// A `uint64` field.
pub fn u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_any(Whole {
        max: u64::MAX,
        expected: "a whole number from 0 to 18446744073709551615 (a JSON number or a string of \
                   digits, as protobuf prints 64-bit numbers)",
    })
}

struct Double;

impl<'de> Visitor<'de> for Double {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number (a JSON number or a string such as \"1.5\")")
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<f64, E> {
        Ok(value)
    }

    #[allow(clippy::cast_precision_loss)]
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<f64, E> {
        Ok(value as f64)
    }

    #[allow(clippy::cast_precision_loss)]
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<f64, E> {
        Ok(value as f64)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<f64, E> {
        text.trim().parse::<f64>().map_err(|_| {
            E::custom(format!(
                "{} is not a number, expected a number (a JSON number or a string such as \"1.5\")",
                crate::validation::quoted(text)
            ))
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
        Ok(0.0)
    }

    fn visit_none<E: de::Error>(self) -> Result<f64, E> {
        Ok(0.0)
    }
}

/// A `double` field. `0` here means "not set"; the caller applies its own default to it.
pub fn f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    deserializer.deserialize_any(Double)
}

struct Bool;

impl<'de> Visitor<'de> for Bool {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true or false")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<bool, E> {
        Ok(value)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<bool, E> {
        match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(E::custom(format!(
                "{} is not a boolean, expected true or false",
                crate::validation::quoted(text)
            ))),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// A `bool` field: `true`, `false`, their strings, or `null` (false).
pub fn bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    deserializer.deserialize_any(Bool)
}

/// A `string` field: `null` is the empty string.
pub fn string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

/// A `string` field the platform keeps as "not set" when empty: `""` and `null` are `None`, as
/// Titus prints an image's absent digest as `"digest": ""`.
pub fn non_empty_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|text| !text.is_empty()))
}

/// What a field's JSON must be: an object or a list (or `null`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    List,
}

/// Reads an object or a list as `T`, or `null` as `None`; refuses the other kind (serde would
/// read a struct from a list of its fields' values, which no proto3 parser does).
struct KindVisitor<T> {
    kind: Kind,
    what: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for KindVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Object => "a JSON object (or null)",
            Kind::List => "a JSON list (or null)",
        })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        if self.kind != Kind::Object {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Option<T>, A::Error> {
        if self.kind != Kind::List {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        T::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Some)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
}

fn of_kind<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
    kind: Kind,
) -> Result<Option<T>, D::Error> {
    deserializer.deserialize_any(KindVisitor {
        kind,
        what: PhantomData,
    })
}

/// A message field: a JSON object, or `null` for its default.
pub fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(of_kind(deserializer, Kind::Object)?.unwrap_or_default())
}

/// A message field kept as "not set" when absent or `null`.
pub fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    of_kind(deserializer, Kind::Object)
}

/// A `repeated` field: a JSON list, or `null` for none.
pub fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(of_kind(deserializer, Kind::List)?.unwrap_or_default())
}

/// A `repeated` message field: a JSON list of objects, or `null` for none.
pub fn messages<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Element<T>(T);
    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Element<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            of_kind(deserializer, Kind::Object)?
                .map(Element)
                .ok_or_else(|| {
                    de::Error::custom("a list's element is null, expected a JSON object")
                })
        }
    }
    let elements: Vec<Element<T>> = list(deserializer)?;
    Ok(elements.into_iter().map(|Element(value)| value).collect())
}

/// An [`Unsupported`] `repeated` field: a list (or `null`).
pub fn unsupported_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Unsupported, D::Error> {
    let items: Vec<serde::de::IgnoredAny> = list(deserializer)?;
    Ok(Unsupported {
        set: !items.is_empty(),
    })
}

/// An [`Unsupported`] message field: an object (or `null`).
pub fn unsupported_message<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Unsupported, D::Error> {
    let fields: Option<BTreeMap<String, serde::de::IgnoredAny>> = optional(deserializer)?;
    Ok(Unsupported {
        set: fields.is_some_and(|fields| !fields.is_empty()),
    })
}

/// An [`Unsupported`] `string` field.
pub fn unsupported_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Unsupported, D::Error> {
    Ok(Unsupported {
        set: !string(deserializer)?.is_empty(),
    })
}

/// A `map<string, string>` field: `null` is empty, and so is a `null` value's entry's value.
pub fn string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map: Option<BTreeMap<String, Option<String>>> = Option::deserialize(deserializer)?;
    Ok(map
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.unwrap_or_default()))
        .collect())
}

/// A proto3 enum the platform models as a Rust enum: by name (exactly as the proto spells it)
/// or by number. `null` is the enum's first value (its zero).
pub trait ProtoEnum: Sized + Copy + Default + 'static {
    /// Every value, in the proto's order, with its name; the index is its number.
    const VALUES: &'static [(Self, &'static str)];
}

struct EnumVisitor<T>(PhantomData<T>);

impl<T: ProtoEnum> EnumVisitor<T> {
    fn expected() -> String {
        let names: Vec<&str> = T::VALUES.iter().map(|(_, name)| *name).collect();
        format!("one of {} (or its number)", names.join(", "))
    }
}

impl<'de, T: ProtoEnum> Visitor<'de> for EnumVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Self::expected())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        T::VALUES
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(value, _)| *value)
            .ok_or_else(|| {
                E::custom(format!(
                    "unknown value {}, expected {}",
                    crate::validation::quoted(text),
                    Self::expected()
                ))
            })
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<T, E> {
        usize::try_from(number)
            .ok()
            .and_then(|index| T::VALUES.get(index))
            .map(|(value, _)| *value)
            .ok_or_else(|| {
                E::custom(format!(
                    "unknown value {number}, expected {}",
                    Self::expected()
                ))
            })
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<T, E> {
        match u64::try_from(number) {
            Ok(number) => self.visit_u64(number),
            Err(_) => Err(E::custom(format!(
                "unknown value {number}, expected {}",
                Self::expected()
            ))),
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }
}

/// An enum field: see [`ProtoEnum`].
pub fn enumeration<'de, D: Deserializer<'de>, T: ProtoEnum>(
    deserializer: D,
) -> Result<T, D::Error> {
    deserializer.deserialize_any(EnumVisitor(PhantomData))
}

/// A `repeated` enum field.
pub fn enumerations<'de, D: Deserializer<'de>, T: ProtoEnum>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    struct One<T>(T);
    impl<'de, T: ProtoEnum> Deserialize<'de> for One<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            enumeration(deserializer).map(One)
        }
    }
    let values: Option<Vec<One<T>>> = Option::deserialize(deserializer)?;
    Ok(values
        .unwrap_or_default()
        .into_iter()
        .map(|One(value)| value)
        .collect())
}

/// A Titus field the platform cannot act on and refuses when it is set: it keeps only whether
/// the request set it to anything but its empty value (`null`, `[]`, `{}`, `""`, `false`, `0`),
/// so validation can name it. It is never stored set, so it is never printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unsupported {
    pub set: bool,
}

impl Unsupported {
    pub fn is_unset(&self) -> bool {
        !self.set
    }
}

impl<'de> Deserialize<'de> for Unsupported {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let set = match &value {
            serde_json::Value::Null => false,
            serde_json::Value::Bool(on) => *on,
            serde_json::Value::Number(number) => number.as_f64() != Some(0.0),
            serde_json::Value::String(text) => !text.is_empty(),
            serde_json::Value::Array(items) => !items.is_empty(),
            serde_json::Value::Object(fields) => !fields.is_empty(),
        };
        Ok(Unsupported { set })
    }
}

impl serde::Serialize for Unsupported {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_none()
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Numbers {
        #[serde(default, deserialize_with = "super::u32")]
        small: u32,
        #[serde(default, deserialize_with = "super::u64")]
        large: u64,
        #[serde(default, deserialize_with = "super::f64")]
        real: f64,
        #[serde(default, deserialize_with = "super::bool")]
        flag: bool,
    }

    fn numbers(value: serde_json::Value) -> Result<Numbers, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn integers_come_as_numbers_or_as_strings_as_protobuf_prints_them() {
        let parsed = numbers(
            json!({"small": "7", "large": "18446744073709551615", "real": "1.5", "flag": "true"}),
        )
        .expect("strings are numbers");
        assert_eq!(
            parsed,
            Numbers {
                small: 7,
                large: u64::MAX,
                real: 1.5,
                flag: true
            }
        );
        let parsed = numbers(json!({"small": 7.0, "large": 1e3})).expect("integral floats");
        assert_eq!((parsed.small, parsed.large), (7, 1000));
    }

    #[test]
    fn null_and_absent_fields_are_zero() {
        let parsed = numbers(json!({"small": null, "large": null, "real": null, "flag": null}))
            .expect("null is the default");
        assert_eq!(
            parsed,
            Numbers {
                small: 0,
                large: 0,
                real: 0.0,
                flag: false
            }
        );
        assert_eq!(numbers(json!({})).expect("absent"), parsed);
    }

    #[test]
    fn fractions_negatives_overflow_and_text_are_refused_saying_what_is_expected() {
        for (value, says) in [
            (json!({"small": 1.5}), "not a whole number"),
            (json!({"small": -1}), "negative"),
            (json!({"small": "4294967296"}), "too large"),
            (json!({"large": "sixty"}), "\"sixty\" is not a number"),
            (json!({"flag": "yes"}), "expected true or false"),
        ] {
            let error = numbers(value.clone()).expect_err("refused");
            assert!(error.contains(says), "{value}: {error}");
        }
    }
}
