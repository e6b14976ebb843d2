//! JSON Schemas of the API's types, for the OpenAPI document.
//!
//! Invariant: a type's schema is derived from the same declaration serde
//! uses ([`api_type!`]), so the document cannot name a field the server
//! does not take or answer. Named types land once in `components/schemas`
//! and are referenced elsewhere, which also terminates recursion.

use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// The named schemas met while describing types (`components/schemas`).
#[derive(Debug, Default)]
pub struct Schemas(BTreeMap<&'static str, Value>);

impl Schemas {
    /// A `$ref` to `name`, defining it with `define` the first time.
    pub fn named(&mut self, name: &'static str, define: impl FnOnce(&mut Schemas) -> Value) -> Value {
        if !self.0.contains_key(name) {
            // Reserved first: a type that contains itself refers to itself.
            self.0.insert(name, Value::Null);
            let v = define(self);
            self.0.insert(name, v);
        }
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    /// `v` itself, or the schema it refers to.
    pub fn resolve(&self, v: Value) -> Value {
        let name = v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/"));
        match name.and_then(|n| self.0.get(n)) {
            Some(def) => def.clone(),
            None => v,
        }
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

/// A type the API sends or takes as JSON.
pub trait Schema {
    fn schema(s: &mut Schemas) -> Value;
    /// The field may be left out (an `Option`).
    const OPTIONAL: bool = false;
}

/// What a route documents as its body or its answer: a schema, and for a
/// JSON object body the fields it takes (the server refuses any other).
pub trait Doc {
    fn doc(s: &mut Schemas) -> Option<Value>;
    fn fields() -> Option<Vec<&'static str>> {
        None
    }
}

/// No body, or an answer without one (204).
impl Doc for () {
    fn doc(_: &mut Schemas) -> Option<Value> {
        None
    }
}

/// Any JSON (a ZApp, a snapshot file, an answer not typed yet).
impl Doc for Value {
    fn doc(_: &mut Schemas) -> Option<Value> {
        Some(json!({}))
    }
}

impl<T: Schema> Doc for Vec<T> {
    fn doc(s: &mut Schemas) -> Option<Value> {
        Some(<Vec<T> as Schema>::schema(s))
    }
}

/// An object schema with `fields` (name, schema, optional).
pub fn object(fields: Vec<(&'static str, Value, bool)>) -> Value {
    let required: Vec<&str> = fields.iter().filter(|(_, _, o)| !o).map(|(n, _, _)| *n).collect();
    let props: Map<String, Value> = fields.into_iter().map(|(n, v, _)| (n.to_string(), v)).collect();
    json!({ "type": "object", "properties": props, "required": required, "additionalProperties": false })
}

macro_rules! plain {
    ($($t:ty => $v:tt),* $(,)?) => {
        $( impl Schema for $t { fn schema(_: &mut Schemas) -> Value { json!($v) } } )*
    };
}

plain! {
    bool => { "type": "boolean" },
    String => { "type": "string" },
    u8 => { "type": "integer", "minimum": 0 },
    u16 => { "type": "integer", "minimum": 0 },
    u32 => { "type": "integer", "minimum": 0 },
    u64 => { "type": "integer", "minimum": 0 },
    usize => { "type": "integer", "minimum": 0 },
    i32 => { "type": "integer" },
    i64 => { "type": "integer" },
    f64 => { "type": "number" },
    Value => {},
}

impl<T: Schema> Schema for Option<T> {
    const OPTIONAL: bool = true;
    fn schema(s: &mut Schemas) -> Value {
        json!({ "anyOf": [T::schema(s), { "type": "null" }] })
    }
}

impl<T: Schema> Schema for Vec<T> {
    fn schema(s: &mut Schemas) -> Value {
        json!({ "type": "array", "items": T::schema(s) })
    }
}

impl<T: Schema> Schema for BTreeSet<T> {
    fn schema(s: &mut Schemas) -> Value {
        json!({ "type": "array", "items": T::schema(s), "uniqueItems": true })
    }
}

impl<T: Schema> Schema for BTreeMap<String, T> {
    fn schema(s: &mut Schemas) -> Value {
        json!({ "type": "object", "additionalProperties": T::schema(s) })
    }
}

/// Declares an API struct: serde derives with `deny_unknown_fields`, its
/// [`Schema`], and `FIELDS`, the keys it takes, in declaration order.
/// Attributes go after doc comments; a field that may be absent is an
/// `Option` (the schema calls every other one required).
#[macro_export]
macro_rules! api_type {
    ($(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name { $( $(#[$fm])* pub $f: $t, )* }

        impl $name {
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($f)),*];
        }

        impl $crate::schema::Doc for $name {
            fn doc(s: &mut $crate::schema::Schemas) -> Option<serde_json::Value> {
                Some(<$name as $crate::schema::Schema>::schema(s))
            }
            fn fields() -> Option<Vec<&'static str>> {
                Some(Self::FIELDS.to_vec())
            }
        }

        $crate::struct_schema!($name { $($f: $t),* });
    };
}

/// The [`Schema`] of struct `$name` from its fields: an object naming each,
/// required unless it is an `Option`.
#[macro_export]
macro_rules! struct_schema {
    ($name:ident { $($f:ident : $t:ty),* $(,)? }) => {
        impl $crate::schema::Schema for $name {
            fn schema(s: &mut $crate::schema::Schemas) -> serde_json::Value {
                s.named(stringify!($name), |_s| {
                    $crate::schema::object(vec![$(
                        (stringify!($f), <$t as $crate::schema::Schema>::schema(_s), <$t as $crate::schema::Schema>::OPTIONAL)
                    ),*])
                })
            }
        }
    };
}

/// The [`Schema`] of a struct of another crate that the API answers as it
/// is (its serde form is the answer, field for field: none renamed,
/// flattened or skipped), from its fields and their types: every one of
/// them, or this fails to compile.
#[macro_export]
macro_rules! model_schema {
    ($name:ident { $($f:ident : $t:ty),* $(,)? }) => {
        const _: fn(&$name) = |v| {
            let $name { $($f),* } = v;
            $( let _: &$t = $f; )*
        };
        $crate::struct_schema!($name { $($f: $t),* });
    };
}

/// A string enum of another crate, described by its serde names.
#[macro_export]
macro_rules! string_enum_schema {
    ($($t:ty => [$($v:literal),* $(,)?]),* $(,)?) => {
        $( impl $crate::schema::Schema for $t {
            fn schema(_: &mut $crate::schema::Schemas) -> serde_json::Value {
                serde_json::json!({ "type": "string", "enum": [$($v),*] })
            }
        } )*
    };
}
