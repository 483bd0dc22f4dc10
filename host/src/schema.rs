//! WIT types ↔ JSON: the schemas agents see and the values tools receive.
//!
//! A tool's parameter and result types are decoded from its component (see
//! [`crate::registry`]) into [`Ty`], this module's own small type tree. From a
//! `Ty` we derive a JSON Schema (2020-12) and convert JSON to wasmtime
//! [`Val`]s and back, by the mapping in the contract:
//!
//! | WIT | JSON |
//! |---|---|
//! | `bool` | boolean |
//! | `u8`…`s32` | integer in range |
//! | `u64`, `s64` | integer, or a decimal string (beyond 2^53) |
//! | `f32`, `f64` | number; `"NaN"`, `"Infinity"`, `"-Infinity"` for non-finite values |
//! | `char` | string of one Unicode scalar value |
//! | `string` | string |
//! | `list<u8>` | base64 string (standard alphabet, padded) |
//! | `list<T>`, `tuple<…>` | array |
//! | record | object (every field required, no others) |
//! | `option<T>` | T or null |
//! | enum | string |
//! | flags | array of strings |
//! | variant, nested `result` | `{"case": value}`, or `"case"` when it has no payload |
//!
//! Conversion never panics: every mismatch is an [`ArgError`] naming the JSON
//! pointer of the offending value and the expected type.

use base64::Engine as _;

/// The decoder of `list<u8>` arguments: padded standard base64, the unused
/// bits of a last partial group ignored, as [`BASE64_PATTERN`] allows them.
const BASE64_IN: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Padded standard base64, as a `list<u8>` argument must be.
const BASE64_PATTERN: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";
use serde_json::{json, Map, Value};
use wasmtime::component::Val;

/// A JSON value read with every object's keys unique: a key given twice is
/// an error rather than its last value taken silently, so that the tool, the
/// guard and the audit record cannot read one text two ways. Arguments from
/// every front door (CLI, REST, MCP) are read with it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UniqueKeys(pub Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(UniqueKeys)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let UniqueKeys(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key {key:?} appears twice in one object"
                )));
            }
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Largest integer a JSON number written with a fraction or an exponent
/// carries exactly through an f64 (2^53).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// A WIT type, as far as the JSON mapping needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    /// `bool`
    Bool,
    /// `u8`
    U8,
    /// `u16`
    U16,
    /// `u32`
    U32,
    /// `u64`
    U64,
    /// `s8`
    S8,
    /// `s16`
    S16,
    /// `s32`
    S32,
    /// `s64`
    S64,
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// `char`
    Char,
    /// `string`
    String,
    /// `list<u8>`, carried as base64.
    Bytes,
    /// `list<T>` for any other `T`.
    List(Box<Ty>),
    /// `tuple<…>`
    Tuple(Vec<Ty>),
    /// A record.
    Record(Named<Vec<Field>>),
    /// A variant.
    Variant(Named<Vec<Case>>),
    /// An enum.
    Enum(Named<Vec<Member>>),
    /// A flags type.
    Flags(Named<Vec<Member>>),
    /// `option<T>` (where `T` is not itself an option).
    Option(Box<Ty>),
    /// `result<T, E>` used as a value (a tool's *return* `result` is unwrapped
    /// by the call pipeline instead).
    Result {
        /// The `ok` payload, if any.
        ok: Option<Box<Ty>>,
        /// The `err` payload, if any.
        err: Option<Box<Ty>>,
    },
}

/// A named WIT type's name, doc comment and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Named<T> {
    /// The WIT name, when the type has one.
    pub name: Option<String>,
    /// The WIT doc comment, when known.
    pub doc: Option<String>,
    /// The fields, cases or members.
    pub body: T,
}

/// A record field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// Field name, kebab-case as in WIT.
    pub name: String,
    /// Field type.
    pub ty: Ty,
    /// Doc comment.
    pub doc: Option<String>,
}

/// A variant case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Case name.
    pub name: String,
    /// Payload type, if the case has one.
    pub ty: Option<Ty>,
    /// Doc comment.
    pub doc: Option<String>,
}

/// An enum case or a flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Name.
    pub name: String,
    /// Doc comment.
    pub doc: Option<String>,
}

/// A named parameter of a tool function.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Parameter name: the key agents use in the arguments object.
    pub name: String,
    /// Its type.
    pub ty: Ty,
}

/// A JSON value that does not fit a WIT type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("argument {pointer}: {problem}")]
pub struct ArgError {
    /// JSON pointer to the offending value in the arguments object.
    pub pointer: String,
    /// What is wrong, naming the expected type.
    pub problem: String,
}

impl Ty {
    /// A short human name of the type, as used in error messages.
    pub fn describe(&self) -> String {
        match self {
            Ty::Bool => "boolean".into(),
            Ty::U8 => "u8 (integer 0..=255)".into(),
            Ty::U16 => "u16 (integer 0..=65535)".into(),
            Ty::U32 => "u32 (integer 0..=4294967295)".into(),
            Ty::U64 => "u64 (integer 0..=18446744073709551615, or a decimal string)".into(),
            Ty::S8 => "s8 (integer -128..=127)".into(),
            Ty::S16 => "s16 (integer -32768..=32767)".into(),
            Ty::S32 => "s32 (integer -2147483648..=2147483647)".into(),
            Ty::S64 => "s64 (integer, or a decimal string)".into(),
            Ty::F32 => "f32 (number)".into(),
            Ty::F64 => "f64 (number)".into(),
            Ty::Char => "char (a string of exactly one character)".into(),
            Ty::String => "string".into(),
            Ty::Bytes => "list<u8> (a base64 string)".into(),
            Ty::List(t) => format!("list<{}> (array)", t.short()),
            Ty::Tuple(ts) => format!("tuple of {} (array)", ts.len()),
            Ty::Record(r) => format!("record {}(object)", name_prefix(&r.name)),
            Ty::Variant(v) => format!(
                "variant {}(one of {})",
                name_prefix(&v.name),
                v.body
                    .iter()
                    .map(|c| quote(&c.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Ty::Enum(e) => format!(
                "enum {}(one of {})",
                name_prefix(&e.name),
                e.body
                    .iter()
                    .map(|c| quote(&c.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Ty::Flags(f) => format!(
                "flags {}(array of {})",
                name_prefix(&f.name),
                f.body
                    .iter()
                    .map(|c| quote(&c.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Ty::Option(t) => format!("option<{}> (value or null)", t.short()),
            Ty::Result { .. } => "result (\"ok\"/\"err\" object or string)".into(),
        }
    }

    fn short(&self) -> String {
        match self {
            Ty::Record(Named { name: Some(n), .. })
            | Ty::Variant(Named { name: Some(n), .. })
            | Ty::Enum(Named { name: Some(n), .. })
            | Ty::Flags(Named { name: Some(n), .. }) => n.clone(),
            other => other
                .describe()
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// The JSON Schema (2020-12) of this type's JSON form.
    pub fn schema(&self) -> Value {
        let int = |min: i128, max: i128| json!({"type": "integer", "minimum": min, "maximum": max});
        let wide = |min: i128, max: i128, pattern: &str| {
            json!({"anyOf": [
                {"type": "integer", "minimum": min, "maximum": max},
                {"type": "string", "pattern": pattern}
            ]})
        };
        let float = |max: f64| {
            json!({"anyOf": [
                {"type": "number", "minimum": -max, "maximum": max},
                {"enum": ["NaN", "Infinity", "-Infinity"]}
            ]})
        };
        match self {
            Ty::Bool => json!({"type": "boolean"}),
            Ty::U8 => int(0, u8::MAX.into()),
            Ty::U16 => int(0, u16::MAX.into()),
            Ty::U32 => int(0, u32::MAX.into()),
            Ty::S8 => int(i8::MIN.into(), i8::MAX.into()),
            Ty::S16 => int(i16::MIN.into(), i16::MAX.into()),
            Ty::S32 => int(i32::MIN.into(), i32::MAX.into()),
            // Exactly the strings validation takes: canonical decimals in
            // the type's range.
            Ty::U64 => wide(
                0,
                u64::MAX.into(),
                &format!("^(?:{})$", decimal_up_to(u64::MAX.into(), true)),
            ),
            Ty::S64 => wide(
                i64::MIN.into(),
                i64::MAX.into(),
                &format!(
                    "^(?:{}|-(?:{}))$",
                    decimal_up_to(i64::MAX as u128, true),
                    decimal_up_to(i64::MIN.unsigned_abs().into(), false)
                ),
            ),
            Ty::F32 => float(f32::MAX.into()),
            Ty::F64 => float(f64::MAX),
            Ty::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
            Ty::String => json!({"type": "string"}),
            // `contentEncoding` is only an annotation: the pattern holds the
            // padded standard alphabet validation accepts.
            Ty::Bytes => json!({
                "type": "string",
                "contentEncoding": "base64",
                "pattern": BASE64_PATTERN,
            }),
            Ty::List(t) => json!({"type": "array", "items": t.schema()}),
            Ty::Tuple(ts) => json!({
                "type": "array",
                "prefixItems": ts.iter().map(Ty::schema).collect::<Vec<_>>(),
                "items": false,
                "minItems": ts.len(),
                "maxItems": ts.len(),
            }),
            Ty::Record(r) => {
                let mut props = Map::new();
                for f in &r.body {
                    props.insert(f.name.clone(), with_doc(f.ty.schema(), f.doc.as_deref()));
                }
                let required: Vec<&str> = r.body.iter().map(|f| f.name.as_str()).collect();
                annotate(
                    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false}),
                    r,
                )
            }
            Ty::Variant(v) => {
                let cases = v.body.iter().map(|c| {
                    let s = match &c.ty {
                        None => json!({"const": c.name}),
                        Some(t) => single_key_object(&c.name, t.schema()),
                    };
                    with_doc(s, c.doc.as_deref())
                });
                annotate(json!({"oneOf": cases.collect::<Vec<_>>()}), v)
            }
            Ty::Enum(e) => {
                let names: Vec<&str> = e.body.iter().map(|m| m.name.as_str()).collect();
                annotate(json!({"type": "string", "enum": names}), e)
            }
            Ty::Flags(f) => {
                let names: Vec<&str> = f.body.iter().map(|m| m.name.as_str()).collect();
                annotate(
                    json!({"type": "array", "items": {"type": "string", "enum": names}, "uniqueItems": true}),
                    f,
                )
            }
            Ty::Option(t) => json!({"anyOf": [t.schema(), {"type": "null"}]}),
            Ty::Result { ok, err } => {
                let case = |name: &str, t: &Option<Box<Ty>>| match t {
                    None => json!({"const": name}),
                    Some(t) => single_key_object(name, t.schema()),
                };
                json!({"oneOf": [case("ok", ok), case("err", err)]})
            }
        }
    }

    /// Converts a JSON value to a wasmtime value of this type. `pointer` is
    /// the JSON pointer of `value`, for error messages.
    pub fn to_val(&self, value: &Value, pointer: &str) -> Result<Val, ArgError> {
        let fail = |problem: String| ArgError {
            pointer: pointer.to_string(),
            problem,
        };
        let mismatch = || {
            fail(format!(
                "expected {}, got {}",
                self.describe(),
                kind_of(value)
            ))
        };
        let out_of_range = || fail(format!("{} is out of range for {}", value, self.describe()));
        Ok(match self {
            Ty::Bool => Val::Bool(value.as_bool().ok_or_else(mismatch)?),
            Ty::U8 => Val::U8(
                int_in(value, pointer, self)?
                    .try_into()
                    .map_err(|_| out_of_range())?,
            ),
            Ty::U16 => Val::U16(
                int_in(value, pointer, self)?
                    .try_into()
                    .map_err(|_| out_of_range())?,
            ),
            Ty::U32 => Val::U32(
                int_in(value, pointer, self)?
                    .try_into()
                    .map_err(|_| out_of_range())?,
            ),
            Ty::U64 => Val::U64(
                int_in(value, pointer, self)?
                    .try_into()
                    .map_err(|_| out_of_range())?,
            ),
            Ty::S8 => Val::S8(
                int_in(value, pointer, self)?
                    .try_into()
                    .map_err(|_| out_of_range())?,
            ),
            Ty::S16 => Val::S16(
                int_in(value, pointer, self)?
                    .try_into()
                    .map_err(|_| out_of_range())?,
            ),
            Ty::S32 => Val::S32(
                int_in(value, pointer, self)?
                    .try_into()
                    .map_err(|_| out_of_range())?,
            ),
            Ty::S64 => Val::S64(
                int_in(value, pointer, self)?
                    .try_into()
                    .map_err(|_| out_of_range())?,
            ),
            Ty::F32 => {
                // The schema's bounds are f32::MAX exactly; a double past
                // them that would round to it is refused as they say.
                let x = float_in(value).ok_or_else(mismatch)?;
                if x.is_finite() && x.abs() > f64::from(f32::MAX) {
                    return Err(out_of_range());
                }
                Val::Float32(x as f32)
            }
            Ty::F64 => Val::Float64(float_in(value).ok_or_else(mismatch)?),
            Ty::Char => {
                let s = value.as_str().ok_or_else(mismatch)?;
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Val::Char(c),
                    _ => {
                        return Err(fail(format!(
                            "expected {}, got a string of {} characters",
                            self.describe(),
                            s.chars().count()
                        )))
                    }
                }
            }
            Ty::String => Val::String(value.as_str().ok_or_else(mismatch)?.to_string()),
            Ty::Bytes => {
                let s = value.as_str().ok_or_else(mismatch)?;
                let bytes = BASE64_IN.decode(s).map_err(|e| {
                    fail(format!(
                        "expected {}, but it is not valid base64: {e}",
                        self.describe()
                    ))
                })?;
                Val::List(bytes.into_iter().map(Val::U8).collect())
            }
            Ty::List(t) => {
                let items = value.as_array().ok_or_else(mismatch)?;
                let mut vals = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    vals.push(t.to_val(item, &format!("{pointer}/{i}"))?);
                }
                Val::List(vals)
            }
            Ty::Tuple(ts) => {
                let items = value.as_array().ok_or_else(mismatch)?;
                if items.len() != ts.len() {
                    return Err(fail(format!(
                        "expected an array of exactly {} items, got {}",
                        ts.len(),
                        items.len()
                    )));
                }
                let mut vals = Vec::with_capacity(ts.len());
                for (i, (t, item)) in ts.iter().zip(items).enumerate() {
                    vals.push(t.to_val(item, &format!("{pointer}/{i}"))?);
                }
                Val::Tuple(vals)
            }
            Ty::Record(r) => {
                let object = value.as_object().ok_or_else(mismatch)?;
                let fields = object_to_vals(
                    object,
                    r.body.iter().map(|f| (f.name.as_str(), &f.ty)),
                    pointer,
                )?;
                Val::Record(fields)
            }
            Ty::Variant(v) => {
                let (name, payload) = case_of(value).ok_or_else(mismatch)?;
                let case = v.body.iter().find(|c| c.name == name).ok_or_else(|| {
                    fail(format!(
                        "unknown case {}: expected {}",
                        quote(name),
                        self.describe()
                    ))
                })?;
                Val::Variant(
                    case.name.clone(),
                    payload_val(case.ty.as_ref(), payload, pointer, name)?,
                )
            }
            Ty::Enum(e) => {
                let s = value.as_str().ok_or_else(mismatch)?;
                if !e.body.iter().any(|m| m.name == s) {
                    return Err(fail(format!(
                        "unknown case {}: expected {}",
                        quote(s),
                        self.describe()
                    )));
                }
                Val::Enum(s.to_string())
            }
            Ty::Flags(f) => {
                let items = value.as_array().ok_or_else(mismatch)?;
                let mut set: Vec<String> = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let at = format!("{pointer}/{i}");
                    let s = item
                        .as_str()
                        .filter(|s| f.body.iter().any(|m| m.name == *s))
                        .ok_or_else(|| ArgError {
                            pointer: at.clone(),
                            problem: format!(
                                "expected one of the flags of {}, got {}",
                                self.describe(),
                                item
                            ),
                        })?;
                    if set.iter().any(|x| x == s) {
                        return Err(ArgError {
                            pointer: at,
                            problem: format!("flag {} given twice", quote(s)),
                        });
                    }
                    set.push(s.to_string());
                }
                Val::Flags(set)
            }
            Ty::Option(t) => match value {
                Value::Null => Val::Option(None),
                v => Val::Option(Some(Box::new(t.to_val(v, pointer)?))),
            },
            Ty::Result { ok, err } => {
                let (name, payload) = case_of(value).ok_or_else(mismatch)?;
                match name {
                    "ok" => Val::Result(Ok(payload_val(ok.as_deref(), payload, pointer, name)?)),
                    "err" => Val::Result(Err(payload_val(err.as_deref(), payload, pointer, name)?)),
                    other => {
                        return Err(fail(format!(
                            "unknown case {}: expected \"ok\" or \"err\"",
                            quote(other)
                        )))
                    }
                }
            }
        })
    }

    /// Converts a value a tool returned to JSON. An error here means the
    /// component returned something that does not match its own type, which
    /// wasmtime rules out; it is reported, never panicked on.
    pub fn to_json(&self, val: &Val) -> Result<Value, String> {
        let bad = || format!("value {val:?} does not match type {}", self.describe());
        Ok(match (self, val) {
            (Ty::Bool, Val::Bool(b)) => json!(b),
            (Ty::U8, Val::U8(n)) => json!(n),
            (Ty::U16, Val::U16(n)) => json!(n),
            (Ty::U32, Val::U32(n)) => json!(n),
            (Ty::U64, Val::U64(n)) => json!(n),
            (Ty::S8, Val::S8(n)) => json!(n),
            (Ty::S16, Val::S16(n)) => json!(n),
            (Ty::S32, Val::S32(n)) => json!(n),
            (Ty::S64, Val::S64(n)) => json!(n),
            (Ty::F32, Val::Float32(x)) => float_out(f64::from(*x)),
            (Ty::F64, Val::Float64(x)) => float_out(*x),
            (Ty::Char, Val::Char(c)) => json!(c.to_string()),
            (Ty::String, Val::String(s)) => json!(s),
            (Ty::Bytes, Val::List(items)) => {
                let bytes: Vec<u8> = items
                    .iter()
                    .map(|v| match v {
                        Val::U8(b) => Ok(*b),
                        _ => Err(bad()),
                    })
                    .collect::<Result<_, _>>()?;
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            (Ty::List(t), Val::List(items)) => Value::Array(
                items
                    .iter()
                    .map(|v| t.to_json(v))
                    .collect::<Result<_, _>>()?,
            ),
            (Ty::Tuple(ts), Val::Tuple(items)) if ts.len() == items.len() => Value::Array(
                ts.iter()
                    .zip(items)
                    .map(|(t, v)| t.to_json(v))
                    .collect::<Result<_, _>>()?,
            ),
            (Ty::Record(r), Val::Record(fields)) if r.body.len() == fields.len() => {
                let mut object = Map::new();
                for (f, (name, v)) in r.body.iter().zip(fields) {
                    if &f.name != name {
                        return Err(bad());
                    }
                    object.insert(name.clone(), f.ty.to_json(v)?);
                }
                Value::Object(object)
            }
            (Ty::Variant(v), Val::Variant(name, payload)) => {
                let case = v.body.iter().find(|c| &c.name == name).ok_or_else(bad)?;
                case_json(name, case.ty.as_ref(), payload.as_deref())?
            }
            (Ty::Enum(_), Val::Enum(name)) => json!(name),
            (Ty::Flags(_), Val::Flags(names)) => json!(names),
            (Ty::Option(_), Val::Option(None)) => Value::Null,
            (Ty::Option(t), Val::Option(Some(v))) => t.to_json(v)?,
            (Ty::Result { ok, .. }, Val::Result(Ok(v))) => {
                case_json("ok", ok.as_deref(), v.as_deref())?
            }
            (Ty::Result { err, .. }, Val::Result(Err(v))) => {
                case_json("err", err.as_deref(), v.as_deref())?
            }
            _ => return Err(bad()),
        })
    }
}

/// A lower bound on the length of a returned value's JSON text, computed on
/// the lifted value before any JSON is built, so that an oversized output is
/// rejected without being copied again. Every mapping writes at least this
/// much: a string its bytes and quotes, `list<u8>` (base64) at least one
/// byte per byte, a container its brackets and its items, any other value
/// at least one byte.
pub fn min_json_size(val: &Val) -> u64 {
    match val {
        Val::String(s) => s.len() as u64 + 2,
        Val::List(items) | Val::Tuple(items) => 2 + items.iter().map(min_json_size).sum::<u64>(),
        Val::Record(fields) => 2 + fields.iter().map(|(_, v)| min_json_size(v)).sum::<u64>(),
        Val::Variant(_, Some(v))
        | Val::Option(Some(v))
        | Val::Result(Ok(Some(v)))
        | Val::Result(Err(Some(v))) => min_json_size(v),
        _ => 1,
    }
}

/// The input schema of a function: an object with one required key per
/// parameter and no others.
pub fn input_schema(params: &[Param], docs: impl Fn(&str) -> Option<String>) -> Value {
    let mut props = Map::new();
    for p in params {
        props.insert(
            p.name.clone(),
            with_doc(p.ty.schema(), docs(&p.name).as_deref()),
        );
    }
    let required: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    })
}

/// The output schema of a function returning `ty` (`None`: returns nothing,
/// output `null`). The caller unwraps a top-level `result` first.
pub fn output_schema(ty: Option<&Ty>) -> Value {
    let mut schema = ty
        .map(Ty::schema)
        .unwrap_or_else(|| json!({"type": "null"}));
    if let Value::Object(o) = &mut schema {
        o.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
    }
    schema
}

/// Converts a JSON arguments object to the parameter values, in order.
/// Unknown keys, missing keys and wrong types are errors.
pub fn arguments_to_vals(params: &[Param], arguments: &Value) -> Result<Vec<Val>, ArgError> {
    let object = arguments.as_object().ok_or_else(|| ArgError {
        pointer: "(root)".into(),
        problem: format!(
            "the arguments must be a JSON object, got {}",
            kind_of(arguments)
        ),
    })?;
    let fields = object_to_vals(object, params.iter().map(|p| (p.name.as_str(), &p.ty)), "")?;
    Ok(fields.into_iter().map(|(_, v)| v).collect())
}

/// Shared by records and argument objects: exact key set, values in the
/// declared order.
fn object_to_vals<'a>(
    object: &Map<String, Value>,
    fields: impl Iterator<Item = (&'a str, &'a Ty)> + Clone,
    pointer: &str,
) -> Result<Vec<(String, Val)>, ArgError> {
    if let Some(unknown) = object
        .keys()
        .find(|k| !fields.clone().any(|(name, _)| name == k.as_str()))
    {
        let expected: Vec<&str> = fields.clone().map(|(n, _)| n).collect();
        return Err(ArgError {
            pointer: format!("{pointer}/{}", escape_pointer(unknown)),
            problem: format!(
                "unknown key {} (expected keys: {})",
                quote(unknown),
                if expected.is_empty() {
                    "none".to_string()
                } else {
                    expected.join(", ")
                }
            ),
        });
    }
    let mut vals = Vec::new();
    for (name, ty) in fields {
        let at = format!("{pointer}/{}", escape_pointer(name));
        let value = object.get(name).ok_or_else(|| ArgError {
            pointer: at.clone(),
            problem: format!("missing key {} of type {}", quote(name), ty.describe()),
        })?;
        vals.push((name.to_string(), ty.to_val(value, &at)?));
    }
    Ok(vals)
}

/// `"name"` or `{"name": payload}`, as variants and nested results are written.
fn case_of(value: &Value) -> Option<(&str, Option<&Value>)> {
    match value {
        Value::String(s) => Some((s.as_str(), None)),
        Value::Object(o) if o.len() == 1 => o.iter().next().map(|(k, v)| (k.as_str(), Some(v))),
        _ => None,
    }
}

fn payload_val(
    ty: Option<&Ty>,
    payload: Option<&Value>,
    pointer: &str,
    case: &str,
) -> Result<Option<Box<Val>>, ArgError> {
    let at = format!("{pointer}/{}", escape_pointer(case));
    match (ty, payload) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(ArgError {
            pointer: at,
            problem: format!(
                "case {} has no payload: write it as the string {}",
                quote(case),
                quote(case)
            ),
        }),
        (Some(t), None) => Err(ArgError {
            pointer: pointer.to_string(),
            problem: format!(
                "case {} needs a payload of type {}: write {{{}: …}}",
                quote(case),
                t.describe(),
                quote(case)
            ),
        }),
        (Some(t), Some(v)) => Ok(Some(Box::new(t.to_val(v, &at)?))),
    }
}

fn case_json(name: &str, ty: Option<&Ty>, payload: Option<&Val>) -> Result<Value, String> {
    match (ty, payload) {
        (None, None) => Ok(json!(name)),
        (Some(t), Some(v)) => Ok(json!({ name: t.to_json(v)? })),
        _ => Err(format!("case {name} payload does not match its type")),
    }
}

/// An integer from a JSON number (integral, exact) or a decimal string.
fn int_in(value: &Value, pointer: &str, ty: &Ty) -> Result<i128, ArgError> {
    let fail = |problem: String| ArgError {
        pointer: pointer.to_string(),
        problem,
    };
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i.into())
            } else if let Some(u) = n.as_u64() {
                Ok(u.into())
            } else {
                // An integral number written with a fraction or an exponent
                // (2.0e2): taken while a double holds it exactly (2^53);
                // past that, every double is integral, so `12345678901234567.5`
                // would pass as another number.
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 {
                    Err(fail(format!(
                        "expected {}, got the non-integer {n}",
                        ty.describe()
                    )))
                } else if f.abs() <= MAX_SAFE_INTEGER {
                    Ok(f as i128)
                } else {
                    // In the type's range but not exact; outside it, the
                    // caller's range check says so (`as` saturates).
                    let in_range = match ty {
                        Ty::U64 => (0.0..18_446_744_073_709_551_616.0).contains(&f),
                        Ty::S64 => {
                            (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f)
                        }
                        _ => false,
                    };
                    if in_range {
                        Err(fail(format!(
                            "{n} is not exact as a JSON number of that size: write it as plain digits or a decimal string ({})",
                            ty.describe()
                        )))
                    } else {
                        Ok(f as i128)
                    }
                }
            }
        }
        Value::String(s) if matches!(ty, Ty::U64 | Ty::S64) => {
            // Canonical decimals only, as the schema's pattern says: a sign
            // only on s64 and never on zero, no leading zero.
            let digits = match s.strip_prefix('-') {
                Some(d) if matches!(ty, Ty::S64) && d != "0" => d,
                Some(_) => "",
                None => s,
            };
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || (digits.len() > 1 && digits.starts_with('0'))
                || digits.len() > 20
            {
                return Err(fail(format!(
                    "expected {}, got the string {} (a number as a string is a plain decimal: digits, a '-' only on s64, no leading zeros, no \"-0\")",
                    ty.describe(),
                    quote(s)
                )));
            }
            s.parse::<i128>().map_err(|_| {
                fail(format!(
                    "expected {}, got the string {}",
                    ty.describe(),
                    quote(s)
                ))
            })
        }
        other => Err(fail(format!(
            "expected {}, got {}",
            ty.describe(),
            kind_of(other)
        ))),
    }
}

/// A regular expression (no anchors) matching the canonical decimal forms
/// of `1..=max` (no sign, no leading zero), and of 0 too when `zero`.
fn decimal_up_to(max: u128, zero: bool) -> String {
    let max = max.to_string();
    let digits = max.as_bytes();
    let mut alternatives: Vec<String> = Vec::new();
    if zero {
        alternatives.push("0".into());
    }
    if digits.len() >= 2 {
        // Every number with fewer digits.
        alternatives.push(format!("[1-9][0-9]{{0,{}}}", digits.len() - 2));
    }
    // As many digits: equal to `max` up to position i, smaller at i.
    for (i, &d) in digits.iter().enumerate() {
        let low = if i == 0 { b'1' } else { b'0' };
        if d > low {
            let class = if d - 1 == low {
                char::from(low).to_string()
            } else {
                format!("[{}-{}]", char::from(low), char::from(d - 1))
            };
            let rest = digits.len() - i - 1;
            let tail = if rest > 0 {
                format!("[0-9]{{{rest}}}")
            } else {
                String::new()
            };
            alternatives.push(format!("{}{class}{tail}", &max[..i]));
        }
    }
    alternatives.push(max);
    alternatives.join("|")
}

fn float_in(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn float_out(x: f64) -> Value {
    if x.is_nan() {
        json!("NaN")
    } else if x.is_infinite() {
        json!(if x > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(x)
    }
}

fn single_key_object(key: &str, schema: Value) -> Value {
    json!({"type": "object", "properties": {key: schema}, "required": [key], "additionalProperties": false})
}

fn annotate<T>(mut schema: Value, named: &Named<T>) -> Value {
    if let Value::Object(o) = &mut schema {
        if let Some(name) = &named.name {
            o.insert("title".into(), json!(name));
        }
    }
    with_doc(schema, named.doc.as_deref())
}

fn with_doc(mut schema: Value, doc: Option<&str>) -> Value {
    if let (Value::Object(o), Some(doc)) = (&mut schema, doc) {
        o.insert("description".into(), json!(doc));
    }
    schema
}

fn name_prefix(name: &Option<String>) -> String {
    name.as_ref().map(|n| format!("{n} ")).unwrap_or_default()
}

fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// "a string", "the number 5", … for error messages.
fn kind_of(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() <= 40 => format!("the string {}", quote(s)),
        Value::String(_) => "a string".into(),
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

/// Decodes a WIT type from a [`wit_parser::Resolve`] into a [`Ty`].
///
/// `docs` looks up doc comments by the keys of [`fabric_wit_docs`]. Types the
/// mapping does not support (resources, futures, streams, nested options,
/// fixed-size lists, maps) are an error naming the type.
pub fn ty_from_wit(
    resolve: &wit_parser::Resolve,
    ty: &wit_parser::Type,
    docs: &dyn Fn(&str) -> Option<String>,
) -> Result<Ty, String> {
    ty_within(resolve, ty, docs, &std::cell::Cell::new(MAX_TYPE_NODES))
}

/// Most named or compound types one parameter or result may expand to. WIT
/// types are a graph, a value's type a tree: a 1.3 KB component whose tuple
/// holds four of the tuple before it, eight deep, expanded into schemas of
/// 200 MB and took seconds and gigabytes to list.
pub const MAX_TYPE_NODES: usize = 10_000;

/// [`ty_from_wit`] with `left` the type nodes still allowed.
fn ty_within(
    resolve: &wit_parser::Resolve,
    ty: &wit_parser::Type,
    docs: &dyn Fn(&str) -> Option<String>,
    left: &std::cell::Cell<usize>,
) -> Result<Ty, String> {
    use wit_parser::{Type, TypeDefKind, TypeOwner};
    let id = match ty {
        Type::Bool => return Ok(Ty::Bool),
        Type::U8 => return Ok(Ty::U8),
        Type::U16 => return Ok(Ty::U16),
        Type::U32 => return Ok(Ty::U32),
        Type::U64 => return Ok(Ty::U64),
        Type::S8 => return Ok(Ty::S8),
        Type::S16 => return Ok(Ty::S16),
        Type::S32 => return Ok(Ty::S32),
        Type::S64 => return Ok(Ty::S64),
        Type::F32 => return Ok(Ty::F32),
        Type::F64 => return Ok(Ty::F64),
        Type::Char => return Ok(Ty::Char),
        Type::String => return Ok(Ty::String),
        Type::ErrorContext => return Err("error-context values are not supported".into()),
        Type::Id(id) => *id,
    };
    if left.get() == 0 {
        return Err(format!(
            "its types expand to more than {MAX_TYPE_NODES} nested types (a type that holds several of another, many levels deep): flatten them"
        ));
    }
    left.set(left.get() - 1);
    let def = &resolve.types[id];
    // The doc-key of this type: `ns:pkg/iface#name`, or `name` for world types.
    let key = def.name.as_ref().map(|name| match def.owner {
        TypeOwner::Interface(i) => format!("{}#{name}", resolve.id_of(i).unwrap_or_default()),
        _ => name.clone(),
    });
    let doc_of = |member: Option<&str>, own: &wit_parser::Docs| -> Option<String> {
        let found = key.as_ref().and_then(|k| match member {
            None => docs(k),
            Some(m) => docs(&format!("{k}.{m}")),
        });
        found.or_else(|| {
            own.contents
                .as_ref()
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
        })
    };
    let meta = (def.name.clone(), doc_of(None, &def.docs));
    fn named<T>(meta: &(Option<String>, Option<String>), body: T) -> Named<T> {
        Named {
            name: meta.0.clone(),
            doc: meta.1.clone(),
            body,
        }
    }
    let recurse = |t: &Type| ty_within(resolve, t, docs, left);
    let label = def
        .name
        .as_deref()
        .map(|n| format!("type `{n}`: "))
        .unwrap_or_default();
    Ok(match &def.kind {
        TypeDefKind::Type(t) => recurse(t)?,
        TypeDefKind::Record(r) => Ty::Record(named(
            &meta,
            r.fields
                .iter()
                .map(|f| {
                    Ok(Field { name: f.name.clone(), ty: recurse(&f.ty)?, doc: doc_of(Some(&f.name), &f.docs) })
                })
                .collect::<Result<_, String>>()?,
        )),
        TypeDefKind::Variant(v) => Ty::Variant(named(
            &meta,
            v.cases
                .iter()
                .map(|c| {
                    Ok(Case {
                        name: c.name.clone(),
                        ty: c.ty.as_ref().map(recurse).transpose()?,
                        doc: doc_of(Some(&c.name), &c.docs),
                    })
                })
                .collect::<Result<_, String>>()?,
        )),
        TypeDefKind::Enum(e) => Ty::Enum(named(
            &meta,
            e.cases.iter().map(|c| Member { name: c.name.clone(), doc: doc_of(Some(&c.name), &c.docs) }).collect(),
        )),
        TypeDefKind::Flags(f) => Ty::Flags(named(
            &meta,
            f.flags.iter().map(|m| Member { name: m.name.clone(), doc: doc_of(Some(&m.name), &m.docs) }).collect(),
        )),
        TypeDefKind::Tuple(t) => Ty::Tuple(t.types.iter().map(recurse).collect::<Result<_, _>>()?),
        // `list<u8>`, or a list of an alias of u8 (`type byte = u8`): bytes.
        TypeDefKind::List(t) => match recurse(t)? {
            Ty::U8 => Ty::Bytes,
            inner => Ty::List(Box::new(inner)),
        },
        TypeDefKind::Option(t) => match recurse(t)? {
            Ty::Option(_) => {
                return Err(format!(
                    "{label}option<option<…>> is not supported: JSON null could not tell its two empty values apart"
                ))
            }
            inner => Ty::Option(Box::new(inner)),
        },
        TypeDefKind::Result(r) => Ty::Result {
            ok: r.ok.as_ref().map(recurse).transpose()?.map(Box::new),
            err: r.err.as_ref().map(recurse).transpose()?.map(Box::new),
        },
        TypeDefKind::Resource | TypeDefKind::Handle(_) => {
            return Err(format!("{label}resources are not supported (a tool's values must be plain data)"))
        }
        TypeDefKind::Future(_) | TypeDefKind::Stream(_) => {
            return Err(format!("{label}futures and streams are not supported"))
        }
        other => return Err(format!("{label}WIT {} types are not supported", other.as_str())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `ty`'s schema takes `s` as its string form (the pattern of
    /// its `anyOf`'s second branch).
    fn pattern_takes(ty: &Ty, s: &str) -> bool {
        let schema = ty.schema();
        let pattern = schema["anyOf"][1]["pattern"].as_str().expect("a pattern");
        regex::Regex::new(pattern).expect("compiles").is_match(s)
    }

    #[test]
    fn wide_integer_strings_are_taken_by_the_schema_exactly_when_validation_takes_them() {
        let mut strings: Vec<String> = [
            "0",
            "-0",
            "00",
            "007",
            "-007",
            "1",
            "-1",
            "+1",
            "",
            "-",
            "1a",
            " 1",
            "1 ",
            "18446744073709551615",
            "18446744073709551616",
            "18446744073709551625",
            "19000000000000000000",
            "99999999999999999999",
            "100000000000000000000",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "-9999999999999999999",
            "-10000000000000000000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every number near a power of ten or a limit, and its negation.
        for base in [u64::MAX as u128, i64::MAX as u128, 1u128 << 63]
            .into_iter()
            .chain((1..=20).map(|e| 10u128.pow(e)))
        {
            for n in base.saturating_sub(12)..=base + 12 {
                strings.push(n.to_string());
                strings.push(format!("-{n}"));
            }
        }
        for ty in [Ty::U64, Ty::S64] {
            for s in &strings {
                let valid = ty.to_val(&Value::String(s.clone()), "").is_ok();
                assert_eq!(pattern_takes(&ty, s), valid, "{ty:?} {s:?}");
            }
        }
    }

    #[test]
    fn a_list_of_an_alias_of_u8_is_bytes() {
        let mut resolve = wit_parser::Resolve::default();
        let package = resolve
            .push_str(
                "t.wit",
                "package t:t;\ninterface i {\n  type byte = u8;\n  f: func(b: list<byte>, n: list<u16>);\n}\n",
            )
            .expect("parses");
        let interface = resolve.packages[package].interfaces["i"];
        let f = &resolve.interfaces[interface].functions["f"];
        let none = |_: &str| None;
        assert_eq!(ty_from_wit(&resolve, &f.params[0].ty, &none), Ok(Ty::Bytes));
        assert_eq!(
            ty_from_wit(&resolve, &f.params[1].ty, &none),
            Ok(Ty::List(Box::new(Ty::U16)))
        );
    }

    /// Numbers and base64 at the edges the schema draws, taken exactly when
    /// the schema takes them.
    #[test]
    fn a_key_given_twice_is_refused_at_any_depth() {
        let read = |text: &str| serde_json::from_str::<UniqueKeys>(text).map(|v| v.0);
        assert_eq!(
            read(r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}]}"#).ok(),
            serde_json::from_str::<Value>(r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}]}"#).ok()
        );
        for text in [r#"{"a":1,"a":2}"#, r#"{"x":[{"b":1,"c":2,"b":1}]}"#] {
            let e = read(text).expect_err("refused").to_string();
            assert!(e.contains("appears twice"), "{e}");
        }
        // The same key in two objects is fine.
        assert!(read(r#"[{"a":1},{"a":2}]"#).is_ok());
    }

    #[test]
    fn edge_values_are_taken_exactly_when_the_schema_says() {
        let takes = |ty: &Ty, json: &str| {
            let value: Value = serde_json::from_str(json).expect("json");
            ty.to_val(&value, "").is_ok()
        };
        // Integral numbers with an exponent are integers to JSON Schema;
        // taken while exact (past 2^53 a double cannot tell .5 apart).
        assert!(takes(&Ty::U64, "1e15"));
        assert!(takes(&Ty::S64, "-1e15"));
        assert!(takes(&Ty::U8, "2.0e2"));
        assert!(!takes(&Ty::U64, "12345678901234567.5"));
        assert!(!takes(&Ty::U64, "1e19"));
        assert!(takes(&Ty::U64, "18446744073709551615"));
        assert!(!takes(&Ty::U8, "2.56e2"));
        assert!(!takes(&Ty::U64, "1.5"));
        // f32's bounds are f32::MAX exactly; the infinities are strings.
        assert!(takes(&Ty::F32, "3.4028234663852886e38"));
        assert!(!takes(&Ty::F32, "3.4028235e38"));
        assert!(takes(&Ty::F32, "\"-Infinity\""));
        // Base64 as the pattern allows: unused trailing bits included.
        let pattern = regex::Regex::new(BASE64_PATTERN).expect("compiles");
        for s in [
            "aGk=", "aGl=", "aGVsbG8=", "aGVsbG9=", "", "aGk", "aG==", "a===",
        ] {
            let json = format!("{s:?}");
            assert_eq!(takes(&Ty::Bytes, &json), pattern.is_match(s), "{s:?}");
        }
    }
}
