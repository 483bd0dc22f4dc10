//! `hostile`: a test tool that misbehaves towards the host (a CPU-bound loop
//! that never returns), for the sandbox's scheduling and accounting tests.
//! Not one of the bundled example tools.

sdk_guest::wit_bindgen::generate!({
    path: ["../../../wit", "wit"],
    world: "fabric-tests:hostile/hostile",
    generate_all,
    runtime_path: "sdk_guest::wit_bindgen::rt",
});

struct Hostile;

impl exports::fabric_tests::hostile::api::Guest for Hostile {
    fn spin() {
        let mut x = 1u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}

export!(Hostile);
