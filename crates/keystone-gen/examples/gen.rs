fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let out = args.get(2).cloned().unwrap_or("/tmp/ksgen".into());
    let t = std::time::Instant::now();
    let s = keystone_gen::generate(
        &keystone_gen::GenConfig::new(n),
        std::path::Path::new(&out),
        &mut |_| {},
    )
    .unwrap();
    println!("{s:?} in {:?}", t.elapsed());
}
