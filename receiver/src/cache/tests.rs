//! Tests of the cache: verification on read, LRU eviction with pins, and downloads that survive crashes.

use std::collections::HashSet;
use std::fs;

use proptest::prelude::*;

use super::fsutil::sha256_hex;
use super::*;

const MB: u64 = 1 << 20;

fn blob(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn pins(shas: &[&String]) -> HashSet<String> {
    shas.iter().map(|s| s.to_string()).collect()
}

#[test]
fn insert_read_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), MB).unwrap();
    let data = blob(1, 1000);
    let sha = sha256_hex(&data);
    assert!(!cache.contains(&sha));
    assert_eq!(cache.read(&sha).unwrap(), None);
    let path = cache.insert(&sha, &data).unwrap();
    assert_eq!(path, dir.path().join("objects").join(format!("{sha}.opus")));
    assert!(cache.contains(&sha));
    assert_eq!(cache.path(&sha), Some(path.clone()));
    assert_eq!(cache.read(&sha).unwrap(), Some(data));
    assert_eq!(cache.verify(&sha).unwrap(), Some(path));
    assert_eq!(cache.list().unwrap(), vec![sha.clone()]);
    let usage = cache.usage().unwrap();
    assert_eq!((usage.used_bytes, usage.objects, usage.cap_bytes), (1000, 1, MB));
    assert!(cache.remove(&sha).unwrap());
    assert!(!cache.contains(&sha));
}

#[test]
fn names_and_contents_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), MB).unwrap();
    assert!(matches!(cache.read("../../etc/passwd"), Err(CacheError::InvalidSha(_))));
    assert!(matches!(cache.partial("abc", 10, 5, 2), Err(CacheError::InvalidSha(_))));
    let wrong = sha256_hex(b"something else");
    assert!(matches!(cache.insert(&wrong, b"data"), Err(CacheError::HashMismatch { .. })));
    assert!(!cache.contains(&wrong));
}

#[test]
fn a_corrupt_object_is_deleted_and_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), MB).unwrap();
    let data = blob(2, 500);
    let sha = sha256_hex(&data);
    let path = cache.insert(&sha, &data).unwrap();
    let mut bad = data.clone();
    bad[100] ^= 0x40;
    fs::write(&path, &bad).unwrap();
    assert_eq!(cache.read(&sha).unwrap(), None);
    assert!(!path.exists() && !cache.contains(&sha));

    cache.insert(&sha, &data).unwrap();
    fs::write(&path, &data[..499]).unwrap();
    assert_eq!(cache.verify(&sha).unwrap(), None);
    assert!(!path.exists());
}

#[test]
fn eviction_is_least_recently_used_and_respects_pins() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (blob(1, 100), blob(2, 100), blob(3, 100));
    let (sa, sb, sc) = (sha256_hex(&a), sha256_hex(&b), sha256_hex(&c));
    {
        let cache = Cache::open(dir.path(), 200).unwrap();
        cache.insert(&sa, &a).unwrap();
        cache.insert(&sb, &b).unwrap();
        cache.insert(&sc, &c).unwrap();
        cache.read(&sa).unwrap(); // use order now: b, c, a
    }
    // The order survives a restart.
    let cache = Cache::open(dir.path(), 200).unwrap();
    assert_eq!(cache.evict(&pins(&[&sb])).unwrap(), vec![sc.clone()]);
    assert!(cache.contains(&sa) && cache.contains(&sb) && !cache.contains(&sc));
    assert_eq!(cache.usage().unwrap().used_bytes, 200);
    assert!(cache.evict(&HashSet::new()).unwrap().is_empty(), "already under the cap");

    // Everything pinned: nothing goes, even over the cap.
    let cache = Cache::open(dir.path(), 50).unwrap();
    assert!(cache.evict(&pins(&[&sa, &sb])).unwrap().is_empty());
    assert_eq!(cache.usage().unwrap().used_bytes, 200);
    assert_eq!(cache.evict(&pins(&[&sa])).unwrap(), vec![sb.clone()]);
}

#[test]
fn eviction_drops_unplanned_downloads_but_not_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), MB).unwrap();
    let (x, y) = (blob(4, 300), blob(5, 300));
    let (sx, sy) = (sha256_hex(&x), sha256_hex(&y));
    let mut px = cache.partial(&sx, 300, 100, 3).unwrap();
    px.write_chunk(0, &x[..100]).unwrap();
    drop(px);
    let open = cache.partial(&sy, 300, 100, 3).unwrap();
    assert_eq!(cache.usage().unwrap().partials, 2);
    cache.evict(&HashSet::new()).unwrap();
    assert_eq!(cache.usage().unwrap().partials, 1, "the open download stays");
    drop(open);
    assert_eq!(cache.partial(&sx, 300, 100, 3).unwrap().missing(), vec![0, 1, 2]);
}

#[test]
fn download_resumes_after_a_crash_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(6, 1000);
    let sha = sha256_hex(&data);
    {
        let cache = Cache::open(dir.path(), MB).unwrap();
        let mut p = cache.partial(&sha, 1000, 300, 4).unwrap();
        assert_eq!(p.missing(), vec![0, 1, 2, 3]);
        p.write_chunk(0, &data[..300]).unwrap();
        p.write_chunk(2, &data[600..900]).unwrap();
        assert_eq!(p.bytes_contiguous_prefix(), 300);
        assert!(matches!(cache.partial(&sha, 1000, 300, 4), Err(CacheError::Busy { .. })));
        // Power cut: the process dies without finishing (a leftover temp file too).
        fs::write(dir.path().join("partial").join(".x.tmp"), b"junk").unwrap();
    }
    let cache = Cache::open(dir.path(), MB).unwrap();
    let mut p = cache.partial(&sha, 1000, 300, 4).unwrap();
    assert!(p.have(0) && !p.have(1) && p.have(2) && !p.have(3));
    assert_eq!(p.missing(), vec![1, 3]);
    assert!(matches!(p.write_chunk(3, &data[900..]), Ok(())));
    assert!(matches!(p.write_chunk(1, &data[300..500]), Err(CacheError::BadChunk { .. })));
    assert!(matches!(p.write_chunk(4, &data[..100]), Err(CacheError::BadChunk { .. })));
    p.write_chunk(1, &data[300..600]).unwrap();
    assert_eq!(p.bytes_contiguous_prefix(), 1000);
    let path = p.finish().unwrap();
    assert_eq!(fs::read(&path).unwrap(), data);
    assert_eq!(cache.read(&sha).unwrap(), Some(data));
    assert_eq!(fs::read_dir(dir.path().join("partial")).unwrap().count(), 0);
}

#[test]
fn a_torn_or_foreign_bitmap_is_treated_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(7, 400);
    let sha = sha256_hex(&data);
    let cache = Cache::open(dir.path(), MB).unwrap();
    let have = dir.path().join("partial").join(format!("{sha}.have"));
    let fill = |cache: &Cache| {
        let mut p = cache.partial(&sha, 400, 100, 4).unwrap();
        p.write_chunk(0, &data[..100]).unwrap();
        p.write_chunk(1, &data[100..200]).unwrap();
    };

    fill(&cache);
    let bytes = fs::read(&have).unwrap();
    fs::write(&have, &bytes[..bytes.len() - 1]).unwrap(); // torn write: wrong length
    assert_eq!(cache.partial(&sha, 400, 100, 4).unwrap().missing(), vec![0, 1, 2, 3]);

    fill(&cache);
    let mut bytes = fs::read(&have).unwrap();
    bytes[24] ^= 0b100; // a flipped bit: claims chunk 2
    fs::write(&have, &bytes).unwrap();
    assert_eq!(cache.partial(&sha, 400, 100, 4).unwrap().missing(), vec![0, 1, 2, 3]);

    fill(&cache);
    // Same file announced with another layout: nothing held can be trusted.
    assert_eq!(cache.partial(&sha, 400, 200, 2).unwrap().missing(), vec![0, 1]);
    assert!(matches!(cache.partial(&sha, 400, 100, 3), Err(CacheError::InvalidLayout { .. })));
    assert!(matches!(cache.partial(&sha, 2 * MB, 100, 20972), Err(CacheError::InvalidLayout { .. })));
}

#[test]
fn a_download_with_wrong_content_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), MB).unwrap();
    let data = blob(8, 200);
    let sha = sha256_hex(&data);
    let mut p = cache.partial(&sha, 200, 100, 2).unwrap();
    p.write_chunk(0, &data[..100]).unwrap();
    assert!(matches!(p.finish(), Err(CacheError::Incomplete { missing: 1, .. })));
    let mut p = cache.partial(&sha, 200, 100, 2).unwrap();
    let growing = p.growing().unwrap();
    p.write_chunk(1, &[0u8; 100]).unwrap();
    assert!(matches!(p.finish(), Err(CacheError::HashMismatch { .. })));
    assert!(growing.progress().abandoned);
    assert!(!cache.contains(&sha));
    assert_eq!(cache.partial(&sha, 200, 100, 2).unwrap().missing(), vec![0, 1]);
}

#[test]
fn growing_handle_follows_the_download() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), MB).unwrap();
    let data = blob(9, 250);
    let sha = sha256_hex(&data);
    let mut p = cache.partial(&sha, 250, 100, 3).unwrap();
    let g = p.growing().unwrap();
    p.write_chunk(1, &data[100..200]).unwrap();
    assert_eq!(g.progress().available, 0);
    p.write_chunk(0, &data[..100]).unwrap();
    assert_eq!(g.progress().available, 200);
    p.write_chunk(2, &data[200..]).unwrap();
    p.finish().unwrap();
    let progress = g.progress();
    assert!(progress.complete && progress.available == 250);
    let mut buf = vec![0u8; 300];
    assert_eq!(g.read_at(0, &mut buf).unwrap(), 250, "still readable after the move into objects/");
    assert_eq!(&buf[..250], &data[..]);

    // Dropping an unfinished download abandons its readers.
    let other = blob(10, 100);
    let mut p = cache.partial(&sha256_hex(&other), 100, 100, 1).unwrap();
    let g = p.growing().unwrap();
    drop(p);
    assert!(g.progress().abandoned);
}

#[derive(Debug, Clone)]
enum Op {
    Write(u32),
    Reopen,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any sequence of chunk writes and restarts keeps `missing()` the exact complement of what was written.
    #[test]
    fn missing_is_the_complement_of_what_was_written(
        chunk_count in 1u32..12,
        chunk_size in 1u32..40,
        short in 0u32..40,
        ops in proptest::collection::vec(prop_oneof![4 => (0u32..12).prop_map(Op::Write), 1 => Just(Op::Reopen)], 0..25),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let total = u64::from(chunk_count) * u64::from(chunk_size) - u64::from(short % chunk_size);
        let data = blob(11, total as usize);
        let sha = sha256_hex(&data);
        let cache = Cache::open(dir.path(), MB).unwrap();
        let mut p = Some(cache.partial(&sha, total, chunk_size, chunk_count).unwrap());
        let mut written = HashSet::new();
        for op in ops {
            match op {
                Op::Write(i) => {
                    let i = i % chunk_count;
                    let start = (u64::from(i) * u64::from(chunk_size)) as usize;
                    let end = (start + chunk_size as usize).min(data.len());
                    p.as_mut().unwrap().write_chunk(i, &data[start..end]).unwrap();
                    written.insert(i);
                }
                Op::Reopen => {
                    drop(p.take());
                    let cache = Cache::open(dir.path(), MB).unwrap();
                    p = Some(cache.partial(&sha, total, chunk_size, chunk_count).unwrap());
                }
            }
            let p = p.as_ref().unwrap();
            let expected: Vec<u32> = (0..chunk_count).filter(|i| !written.contains(i)).collect();
            prop_assert_eq!(p.missing(), expected);
            let prefix = (0..chunk_count).take_while(|i| written.contains(i)).count() as u64 * u64::from(chunk_size);
            prop_assert_eq!(p.bytes_contiguous_prefix(), prefix.min(total));
        }
        let mut p = p.unwrap();
        for i in p.missing() {
            let start = (u64::from(i) * u64::from(chunk_size)) as usize;
            let end = (start + chunk_size as usize).min(data.len());
            p.write_chunk(i, &data[start..end]).unwrap();
        }
        let path = p.finish().unwrap();
        prop_assert_eq!(fs::read(path).unwrap(), data);
    }
}
