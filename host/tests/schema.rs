//! The WIT ↔ JSON mapping in isolation: schema derivation from WIT source,
//! unsupported types, and property tests that conversion round-trips and
//! never panics on any input.

use fabric_host::schema::{
    arguments_to_vals, input_schema, ty_from_wit, Case, Field, Member, Named, Param, Ty,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn wit_types(src: &str) -> Vec<(String, Result<Ty, String>)> {
    let mut resolve = wit_parser::Resolve::default();
    let pkg = resolve.push_str("t.wit", src).expect("valid WIT");
    let iface = resolve.packages[pkg].interfaces["api"];
    let docs = |_: &str| None;
    resolve.interfaces[iface]
        .functions
        .values()
        .map(|f| {
            (
                f.name.clone(),
                ty_from_wit(&resolve, &f.params[0].ty, &docs),
            )
        })
        .collect()
}

#[test]
fn a_type_that_expands_past_the_cap_is_refused_not_built() {
    // Each tuple holds four of the one before: 4^8 = 65,536 nested types
    // from a few lines of WIT.
    let mut src = String::from("package t:t;\ninterface api {\n type t0 = tuple<u8, u8>;\n");
    for i in 1..=8 {
        let p = i - 1;
        src += &format!(" type t{i} = tuple<t{p}, t{p}, t{p}, t{p}>;\n");
    }
    src += " deep: func(x: t8);\n shallow: func(x: t5);\n}\n";
    let types = wit_types(&src);
    let of = |name: &str| &types.iter().find(|(n, _)| n == name).expect("listed").1;
    let error = of("deep").as_ref().expect_err("refused");
    assert!(error.contains("10000 nested types"), "{error}");
    // 4^5 = 1,024: within the cap.
    assert!(of("shallow").is_ok());
}

#[test]
fn derives_types_and_rejects_unsupported_ones_with_reasons() {
    let types = wit_types(
        r#"package t:t;
        interface api {
            /// A doc.
            record r { a: u8, b: option<string> }
            type alias = list<u8>;
            resource res;
            a: func(x: r);
            b: func(x: alias);
            c: func(x: borrow<res>);
            d: func(x: option<option<u8>>);
            e: func(x: list<tuple<s64, char>>);
            f: func(x: stream<u8>);
        }"#,
    );
    let get = |n: &str| types.iter().find(|(name, _)| name == n).unwrap().1.clone();
    match get("a").unwrap() {
        Ty::Record(r) => {
            assert_eq!(r.name.as_deref(), Some("r"));
            assert_eq!(r.doc.as_deref(), Some("A doc."));
            assert_eq!(r.body[1].ty, Ty::Option(Box::new(Ty::String)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(get("b").unwrap(), Ty::Bytes);
    assert!(get("c")
        .unwrap_err()
        .contains("resources are not supported"));
    assert!(get("d").unwrap_err().contains("option<option"));
    assert_eq!(
        get("e").unwrap(),
        Ty::List(Box::new(Ty::Tuple(vec![Ty::S64, Ty::Char])))
    );
    assert!(get("f").unwrap_err().contains("streams are not supported"));
}

#[test]
fn input_schema_is_a_closed_object_of_required_keys() {
    let params = vec![
        Param {
            name: "a".into(),
            ty: Ty::U8,
        },
        Param {
            name: "b-c".into(),
            ty: Ty::String,
        },
    ];
    assert_eq!(
        input_schema(&params, |_| None),
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 255}, "b-c": {"type": "string"}},
            "required": ["a", "b-c"],
            "additionalProperties": false,
        })
    );
}

#[test]
fn error_pointers_reach_into_nested_values() {
    let ty = Ty::List(Box::new(Ty::Record(Named {
        name: Some("p".into()),
        doc: None,
        body: vec![Field {
            name: "x/y".into(),
            ty: Ty::Bool,
            doc: None,
        }],
    })));
    let params = [Param {
        name: "ps".into(),
        ty,
    }];
    let e = arguments_to_vals(&params, &json!({"ps": [{"x/y": true}, {"x/y": 3}]})).unwrap_err();
    assert_eq!(e.pointer, "/ps/1/x~1y");
    assert_eq!(e.problem, "expected boolean, got the number 3");
}

// ---- property tests over arbitrary types ----

fn names(n: usize) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::btree_set("[a-z][a-z0-9-]{0,6}", 1..=n)
        .prop_map(|s| s.into_iter().collect())
}

fn arb_ty() -> impl Strategy<Value = Ty> {
    let leaf = prop_oneof![
        Just(Ty::Bool),
        Just(Ty::U8),
        Just(Ty::U16),
        Just(Ty::U32),
        Just(Ty::U64),
        Just(Ty::S8),
        Just(Ty::S16),
        Just(Ty::S32),
        Just(Ty::S64),
        Just(Ty::F32),
        Just(Ty::F64),
        Just(Ty::Char),
        Just(Ty::String),
        Just(Ty::Bytes),
        names(4).prop_map(|n| Ty::Enum(named(
            n.into_iter()
                .map(|name| Member { name, doc: None })
                .collect()
        ))),
        names(4).prop_map(|n| Ty::Flags(named(
            n.into_iter()
                .map(|name| Member { name, doc: None })
                .collect()
        ))),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| Ty::List(Box::new(t))),
            proptest::collection::vec(inner.clone(), 1..4).prop_map(Ty::Tuple),
            (names(4), proptest::collection::vec(inner.clone(), 4)).prop_map(|(n, ts)| Ty::Record(
                named(
                    n.into_iter()
                        .zip(ts)
                        .map(|(name, ty)| Field {
                            name,
                            ty,
                            doc: None
                        })
                        .collect()
                )
            )),
            (
                names(4),
                proptest::collection::vec(proptest::option::of(inner.clone()), 4)
            )
                .prop_map(|(n, ts)| {
                    Ty::Variant(named(
                        n.into_iter()
                            .zip(ts)
                            .map(|(name, ty)| Case {
                                name,
                                ty,
                                doc: None,
                            })
                            .collect(),
                    ))
                }),
            inner
                .clone()
                .prop_filter("no nested options", |t| !matches!(t, Ty::Option(_)))
                .prop_map(|t| Ty::Option(Box::new(t))),
            (
                proptest::option::of(inner.clone()),
                proptest::option::of(inner)
            )
                .prop_map(|(ok, err)| Ty::Result {
                    ok: ok.map(Box::new),
                    err: err.map(Box::new)
                }),
        ]
    })
}

fn named<T>(body: T) -> Named<T> {
    Named {
        name: None,
        doc: None,
        body,
    }
}

/// A canonical JSON value of type `ty` (what `to_json` produces).
fn arb_value(ty: &Ty) -> BoxedStrategy<Value> {
    match ty {
        Ty::Bool => any::<bool>().prop_map(Value::from).boxed(),
        Ty::U8 => any::<u8>().prop_map(Value::from).boxed(),
        Ty::U16 => any::<u16>().prop_map(Value::from).boxed(),
        Ty::U32 => any::<u32>().prop_map(Value::from).boxed(),
        Ty::U64 => any::<u64>().prop_map(Value::from).boxed(),
        Ty::S8 => any::<i8>().prop_map(Value::from).boxed(),
        Ty::S16 => any::<i16>().prop_map(Value::from).boxed(),
        Ty::S32 => any::<i32>().prop_map(Value::from).boxed(),
        Ty::S64 => any::<i64>().prop_map(Value::from).boxed(),
        Ty::F32 => prop_oneof![
            any::<f32>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(|x| json!(f64::from(x))),
            Just(json!("NaN")),
            Just(json!("-Infinity")),
        ]
        .boxed(),
        Ty::F64 => prop_oneof![
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(|x| json!(x)),
            Just(json!("Infinity"))
        ]
        .boxed(),
        Ty::Char => any::<char>().prop_map(|c| json!(c.to_string())).boxed(),
        Ty::String => any::<String>().prop_map(Value::from).boxed(),
        Ty::Bytes => proptest::collection::vec(any::<u8>(), 0..16)
            .prop_map(|b| {
                use base64::Engine as _;
                json!(base64::engine::general_purpose::STANDARD.encode(b))
            })
            .boxed(),
        Ty::List(t) => proptest::collection::vec(arb_value(t), 0..4)
            .prop_map(Value::from)
            .boxed(),
        Ty::Tuple(ts) => ts
            .iter()
            .map(arb_value)
            .collect::<Vec<_>>()
            .prop_map(Value::from)
            .boxed(),
        Ty::Record(r) => {
            let keys: Vec<String> = r.body.iter().map(|f| f.name.clone()).collect();
            r.body
                .iter()
                .map(|f| arb_value(&f.ty))
                .collect::<Vec<_>>()
                .prop_map(move |vs| Value::Object(keys.iter().cloned().zip(vs).collect()))
                .boxed()
        }
        Ty::Variant(v) => {
            let cases: Vec<BoxedStrategy<Value>> = v
                .body
                .iter()
                .map(|c| {
                    let name = c.name.clone();
                    match &c.ty {
                        None => Just(json!(name)).boxed(),
                        Some(t) => arb_value(t)
                            .prop_map(move |x| json!({ name.clone(): x }))
                            .boxed(),
                    }
                })
                .collect();
            proptest::strategy::Union::new(cases).boxed()
        }
        Ty::Enum(e) => {
            proptest::sample::select(e.body.iter().map(|m| m.name.clone()).collect::<Vec<_>>())
                .prop_map(Value::from)
                .boxed()
        }
        Ty::Flags(f) => {
            let all: Vec<String> = f.body.iter().map(|m| m.name.clone()).collect();
            let n = all.len();
            proptest::sample::subsequence(all, 0..=n)
                .prop_map(Value::from)
                .boxed()
        }
        Ty::Option(t) => proptest::option::of(arb_value(t))
            .prop_map(|o| o.unwrap_or(Value::Null))
            .boxed(),
        Ty::Result { ok, err } => {
            let case = |name: &'static str, t: &Option<Box<Ty>>| match t {
                None => Just(json!(name)).boxed(),
                Some(t) => arb_value(t).prop_map(move |x| json!({ name: x })).boxed(),
            };
            prop_oneof![case("ok", ok), case("err", err)].boxed()
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(|x| json!(x)),
        any::<String>().prop_map(Value::from),
        "[a-z0-9-]{1,6}".prop_map(Value::from),
        Just(json!("NaN")),
        Just(json!("18446744073709551616")),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z][a-z0-9-]{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn canonical_values_round_trip((ty, value) in arb_ty().prop_flat_map(|t| { let v = arb_value(&t); (Just(t), v) })) {
        let val = ty.to_val(&value, "").map_err(|e| TestCaseError::fail(format!("{e} for {value}")))?;
        prop_assert_eq!(ty.to_json(&val).map_err(TestCaseError::fail)?, value);
    }

    #[test]
    fn any_json_against_any_type_is_accepted_or_rejected_never_panics(ty in arb_ty(), value in arb_json()) {
        if let Ok(val) = ty.to_val(&value, "") {
            // Whatever is accepted converts back to JSON of the same type.
            let back = ty.to_json(&val).map_err(TestCaseError::fail)?;
            prop_assert!(ty.to_val(&back, "").is_ok());
        }
        let schema = ty.schema();
        prop_assert!(schema.is_object());
    }
}
