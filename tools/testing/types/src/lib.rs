//! `types`: a test tool whose functions cover every WIT type Fabric maps to
//! JSON, plus misbehaviours (spinning, allocating, panicking, huge output)
//! for the sandbox's limits. Not one of the bundled example tools.

sdk_guest::wit_bindgen::generate!({
    path: ["../../../wit", "wit"],
    world: "fabric-tests:types/types",
    generate_all,
    runtime_path: "sdk_guest::wit_bindgen::rt",
});

use std::cell::Cell;

use exports::fabric_tests::types::api::{Counter, Everything, Guest, GuestCounter, Shape};

struct Types;

/// The resource behind `counter`.
struct Count(Cell<u32>);

impl GuestCounter for Count {
    fn new(start: u32) -> Self {
        Count(Cell::new(start))
    }

    fn next(&self) -> u32 {
        let n = self.0.get();
        self.0.set(n.wrapping_add(1));
        n
    }
}

impl Guest for Types {
    type Counter = Count;

    fn make_counter(start: u32) -> Counter {
        Counter::new(Count::new(start))
    }

    fn nested_option(x: Option<Option<u8>>) -> u8 {
        x.flatten().unwrap_or(0)
    }

    fn echo_everything(e: Everything) -> Everything {
        e
    }

    #[allow(clippy::too_many_arguments)]
    fn ints(
        a: u8,
        b: i8,
        c: u16,
        d: i16,
        e: u32,
        f: i32,
        g: u64,
        h: i64,
    ) -> (u8, i8, u16, i16, u32, i32, u64, i64) {
        (a, b, c, d, e, f, g, h)
    }

    fn text(s: String, c: char) -> (String, char) {
        (s, c)
    }

    fn echo_shape(s: Shape) -> Shape {
        s
    }

    fn maybe(x: Option<String>) -> Option<String> {
        x
    }

    fn checked(x: i32) -> Result<i32, String> {
        if x >= 0 {
            Ok(x)
        } else {
            Err(format!("{x} is negative"))
        }
    }

    fn failing() -> Result<String, Everything> {
        Err(Everything {
            a_u8: 1,
            a_s8: -1,
            a_u16: 2,
            a_s16: -2,
            a_u32: 3,
            a_s32: -3,
            a_u64: u64::MAX,
            a_s64: i64::MIN,
            a_f32: 1.5,
            a_f64: f64::NAN,
            a_char: 'ß',
            a_string: "bad\0news".into(),
            a_bool: true,
            bytes: vec![0, 255],
            words: vec![],
            pair: (-7, "seven".into()),
            maybe: None,
            color: exports::fabric_tests::types::api::Color::Blue,
            perms: exports::fabric_tests::types::api::Perms::READ
                | exports::fabric_tests::types::api::Perms::EXEC,
            shape: Shape::None,
            outcome: Err("inner".into()),
            unit_result: Ok(()),
            nested: vec![None, Some(Shape::Circle(2.0))],
        })
    }

    fn nothing() {}

    fn spin(n: u64) -> u64 {
        let mut x = n;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            if x == n.wrapping_add(u64::MAX) {
                return x;
            }
        }
    }

    fn work(n: u64) -> u64 {
        let mut x = n;
        for _ in 0..n {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        x
    }

    fn allocate(mib: u32) -> u32 {
        let mut v = vec![0u8; mib as usize * 1024 * 1024];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        std::hint::black_box(&v);
        mib
    }

    fn panic(message: String) {
        panic!("{message}");
    }

    fn big(n: u32) -> String {
        "x".repeat(n as usize)
    }

    fn refuse(reason: String) -> Result<String, String> {
        Err(reason)
    }
}

export!(Types);
