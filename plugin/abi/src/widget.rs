//! The widget rules both sides apply, in plain Rust: a parameter value and the check of a value
//! against a widget's kind, range or choices.
//!
//! The plugin checks every `node_execute` call with [`check_param`]; a host checks a graph with
//! the same function before anything runs, so the two can never disagree about what is in range
//! (as wgpu-types holds the rules wgpu and its backends share). Nothing here is `#[repr(C)]`:
//! the C boundary carries parameters as [`crate::LctParam`].

use core::fmt;

/// A widget (parameter) value.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    /// STRING or ENUM.
    Text(String),
}

impl ParamValue {
    /// The kind of value this is, as the ABI spells kinds ("INT"); text is "STRING".
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Bool(_) => "BOOL",
            Self::Int(_) => "INT",
            Self::Float(_) => "FLOAT",
            Self::Text(_) => "STRING",
        }
    }
}

/// Numbers as written, text quoted: how error messages show a value.
impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(v) => write!(f, "{v}"),
            Self::Int(v) => write!(f, "{v}"),
            Self::Float(v) => write!(f, "{v}"),
            Self::Text(v) => write!(f, "{v:?}"),
        }
    }
}

impl From<bool> for ParamValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl From<i64> for ParamValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<i32> for ParamValue {
    fn from(v: i32) -> Self {
        Self::Int(v.into())
    }
}
impl From<u32> for ParamValue {
    fn from(v: u32) -> Self {
        Self::Int(v.into())
    }
}
impl From<f64> for ParamValue {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}
impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}
impl From<String> for ParamValue {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

/// What a widget accepts. `S` is however the caller stores choice text (`&'static str` in the
/// plugin's static descriptors, `String` in a host's copy of them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WidgetRule<'a, S = &'a str> {
    /// An INT within `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    /// A FLOAT (or an INT, converted) within `min..=max`.
    Float {
        min: f64,
        max: f64,
    },
    Bool,
    /// Any STRING.
    Text,
    /// An ENUM: one of these texts.
    Choices(&'a [S]),
}

impl<S> WidgetRule<'_, S> {
    /// The widget's kind as the ABI spells it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Int { .. } => "INT",
            Self::Float { .. } => "FLOAT",
            Self::Bool => "BOOL",
            Self::Text => "STRING",
            Self::Choices(_) => "ENUM",
        }
    }
}

/// Why a value does not fit a widget. Callers add the node and widget names. Exhaustive on
/// purpose: a new rule must be mapped by every caller.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamRuleError {
    /// A value of the wrong kind (a FLOAT for an INT widget, text for a number...).
    WrongKind {
        /// The widget's kind ("INT").
        expected: &'static str,
        /// The value's kind ([`ParamValue::kind_name`]).
        found: &'static str,
    },
    /// A number outside the widget's range (NaN is outside every range).
    OutOfRange {
        value: String,
        min: String,
        max: String,
    },
    /// Text that is not one of an ENUM widget's choices.
    NotAChoice { value: String },
}

/// "is 0, outside 1..=1024": reads after "widget `frames` ".
impl fmt::Display for ParamRuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongKind { expected, found } => {
                write!(f, "takes {expected}, got a {found} value")
            }
            Self::OutOfRange { value, min, max } => write!(f, "is {value}, outside {min}..={max}"),
            Self::NotAChoice { value } => write!(f, "is {value:?}, not one of its choices"),
        }
    }
}

/// Checks `value` against `rule` and returns it as the widget stores it: an INT given to a
/// FLOAT widget becomes a FLOAT. The one range check of lct; both sides call it.
pub fn check_param<S: AsRef<str>>(
    rule: &WidgetRule<'_, S>,
    value: ParamValue,
) -> Result<ParamValue, ParamRuleError> {
    let out_of_range =
        |value: &dyn fmt::Display, min: &dyn fmt::Display, max: &dyn fmt::Display| {
            ParamRuleError::OutOfRange {
                value: value.to_string(),
                min: min.to_string(),
                max: max.to_string(),
            }
        };
    match (rule, value) {
        (&WidgetRule::Int { min, max }, ParamValue::Int(v)) => {
            if (min..=max).contains(&v) {
                Ok(ParamValue::Int(v))
            } else {
                Err(out_of_range(&v, &min, &max))
            }
        }
        (&WidgetRule::Float { min, max }, value @ (ParamValue::Int(_) | ParamValue::Float(_))) => {
            let v = match value {
                ParamValue::Int(v) => v as f64,
                ParamValue::Float(v) => v,
                _ => unreachable!("matched above"),
            };
            // Written so that NaN is out of range.
            if min <= v && v <= max {
                Ok(ParamValue::Float(v))
            } else {
                Err(out_of_range(&v, &min, &max))
            }
        }
        (WidgetRule::Bool, value @ ParamValue::Bool(_))
        | (WidgetRule::Text, value @ ParamValue::Text(_)) => Ok(value),
        (WidgetRule::Choices(choices), ParamValue::Text(v)) => {
            if choices.iter().any(|c| c.as_ref() == v) {
                Ok(ParamValue::Text(v))
            } else {
                Err(ParamRuleError::NotAChoice { value: v })
            }
        }
        (rule, value) => Err(ParamRuleError::WrongKind {
            expected: rule.kind_name(),
            found: value.kind_name(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_are_checked_against_their_inclusive_range() {
        let rule: WidgetRule = WidgetRule::Int { min: 1, max: 1024 };
        assert_eq!(check_param(&rule, 1.into()), Ok(ParamValue::Int(1)));
        assert_eq!(check_param(&rule, 1024.into()), Ok(ParamValue::Int(1024)));
        let error = check_param(&rule, 0.into()).unwrap_err();
        assert_eq!(error.to_string(), "is 0, outside 1..=1024");
    }

    #[test]
    fn floats_take_ints_and_refuse_nan() {
        let rule: WidgetRule = WidgetRule::Float { min: 0.0, max: 2.5 };
        assert_eq!(check_param(&rule, 2.into()), Ok(ParamValue::Float(2.0)));
        assert_eq!(
            check_param(&rule, 3.into()).unwrap_err().to_string(),
            "is 3, outside 0..=2.5"
        );
        assert!(matches!(
            check_param(&rule, f64::NAN.into()),
            Err(ParamRuleError::OutOfRange { .. })
        ));
    }

    #[test]
    fn choices_and_kinds_are_enforced() {
        let choices = ["joint".to_owned(), "autoregressive".to_owned()];
        let rule = WidgetRule::Choices(&choices);
        assert_eq!(check_param(&rule, "joint".into()), Ok("joint".into()));
        assert_eq!(
            check_param(&rule, "x".into()),
            Err(ParamRuleError::NotAChoice { value: "x".into() })
        );
        let int: WidgetRule = WidgetRule::Int { min: 0, max: 1 };
        assert_eq!(
            check_param(&int, 1.0.into()).unwrap_err().to_string(),
            "takes INT, got a FLOAT value"
        );
        assert!(check_param(&WidgetRule::<&str>::Bool, "yes".into()).is_err());
        assert_eq!(
            check_param(&WidgetRule::<&str>::Text, "".into()),
            Ok("".into())
        );
    }
}
