#[cfg(test)]
mod tmp {
    use crate::fs::SimFs;
    use crate::{Log, Options, Durability};
    use std::sync::Arc;

    fn opts() -> Options { Options { segment_bytes: 8192, max_record_bytes: 2048, ..Options::default() } }

    #[test]
    fn exp1_lower_max_record_bytes_cuts_acked() {
        let sim = SimFs::new(1);
        let fs = Arc::new(sim.clone());
        let log = Log::open_with(fs.clone(), "/s", opts()).unwrap();
        log.append(&[b"small"]).unwrap();
        log.append(&[vec![7u8; 1500]]).unwrap();
        drop(log);
        sim.crash_drop_all();
        // reopen with preallocate to remove clean close: write garbage? use index removal
        let _ = std::fs::metadata("/nonexistent");
        let mut o = opts(); o.max_record_bytes = 1024;
        let r = Log::open_with(fs.clone(), "/s", o.clone());
        match r { Ok(l) => println!("EXP1 ok report={:?} visible={}", l.recovery_report(), l.visible_end()), Err(e) => println!("EXP1 err {e}") }
    }

    #[test]
    fn exp1b_unclean() {
        let sim = SimFs::new(2);
        let fs = Arc::new(sim.clone());
        let log = Log::open_with(fs.clone(), "/s", opts()).unwrap();
        log.append(&[b"small"]).unwrap();
        log.append(&[vec![7u8; 1500]]).unwrap();
        std::mem::forget(log);
        sim.crash_drop_all();
        let mut o = opts(); o.max_record_bytes = 1024;
        let r = Log::open_with(fs.clone(), "/s", o.clone());
        match r { Ok(l) => println!("EXP1b ok report={:?} visible={}", l.recovery_report(), l.visible_end()), Err(e) => println!("EXP1b err {e}") }
    }

    #[test]
    fn exp2_garbage_after_seal() {
        let sim = SimFs::new(3);
        let fs = Arc::new(sim.clone());
        let log = Log::open_with(fs.clone(), "/s", opts()).unwrap();
        for _ in 0..10 { log.append(&[vec![1u8; 1000]]).unwrap(); }
        assert!(log.stats().rolls >= 1);
        log.close().unwrap();
        let p = "/s/segments/00000000000000000000.seg";
        let mut b = sim.current_bytes(p).unwrap();
        let n = b.len();
        b.extend_from_slice(&[0xAB; 100]);
        sim.write_file_raw(p, &b).unwrap();
        let l = Log::open_with(fs.clone(), "/s", opts()).unwrap();
        println!("EXP2 report={:?} newlen={} oldlen={}", l.recovery_report(), sim.current_bytes(p).unwrap().len(), n);
        let names: Vec<_> = crate::fs::Storage::read_dir(&sim, std::path::Path::new("/s/segments")).unwrap();
        println!("EXP2 files {names:?}");
    }

    #[test]
    fn exp3_torn_seal_not_reported() {
        let sim = SimFs::new(4);
        let fs = Arc::new(sim.clone());
        let log = Log::open_with(fs.clone(), "/s", opts()).unwrap();
        for _ in 0..10 { log.append(&[vec![1u8; 1000]]).unwrap(); }
        log.close().unwrap();
        let p = "/s/segments/00000000000000000000.seg";
        let mut b = sim.current_bytes(p).unwrap();
        let n = b.len();
        b[n - 30] ^= 0xFF; // damage seal
        sim.write_file_raw(p, &b).unwrap();
        let l = Log::open_with(fs.clone(), "/s", opts()).unwrap();
        println!("EXP3 report={:?}", l.recovery_report());
        let names: Vec<_> = crate::fs::Storage::read_dir(&sim, std::path::Path::new("/s/segments")).unwrap();
        println!("EXP3 files {names:?}");
    }

    #[test]
    fn exp4_no_segments_but_idx() {
        let sim = SimFs::new(5);
        let fs = Arc::new(sim.clone());
        let log = Log::open_with(fs.clone(), "/s", opts()).unwrap();
        for _ in 0..10 { log.append(&[vec![1u8; 1000]]).unwrap(); }
        log.close().unwrap();
        for name in crate::fs::Storage::read_dir(&sim, std::path::Path::new("/s/segments")).unwrap() {
            if name.ends_with(".seg") { crate::fs::Storage::remove_file(&sim, &std::path::Path::new("/s/segments").join(&name)).unwrap(); }
        }
        let l = Log::open_with(fs.clone(), "/s", opts()).unwrap();
        println!("EXP4 report={:?}", l.recovery_report());
    }

    #[test]
    fn exp5_batched_torn() {
        let sim = SimFs::new(6);
        let fs = Arc::new(sim.clone());
        let mut o = opts();
        o.durability = Durability::None;
        let log = Log::open_with(fs.clone(), "/s", o.clone()).unwrap();
        log.append(&[b"a"]).unwrap();
        std::mem::forget(log);
        sim.crash_drop_all();
        let l = Log::open_with(fs.clone(), "/s", o).unwrap();
        println!("EXP5 report={:?}", l.recovery_report());
    }
}
