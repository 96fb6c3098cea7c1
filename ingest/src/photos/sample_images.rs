//! Small real images built byte by byte, for the tests of metadata stripping (`strip`'s unit
//! tests and ingest's integration tests, which include this file): a 1×1 grey baseline JPEG
//! (JFIF header, one quantisation table, two one-code Huffman tables, one scan) and a 1×1 RGB
//! PNG (a stored zlib block), with whatever metadata segments or chunks a test puts in.

/// An EXIF (TIFF, big-endian) block whose IFD0 points at a GPS IFD with a latitude reference
/// "N" — enough for a reader to find a GPS position — followed by a readable note.
pub fn exif_with_gps() -> Vec<u8> {
    let mut t = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    // IFD0: one entry, GPSInfo (0x8825) → offset 26.
    t.extend_from_slice(&[0x00, 0x01, 0x88, 0x25, 0x00, 0x04, 0, 0, 0, 1, 0, 0, 0, 26]);
    t.extend_from_slice(&[0, 0, 0, 0]);
    // GPS IFD: GPSLatitudeRef (1) = "N".
    t.extend_from_slice(&[
        0x00, 0x01, 0x00, 0x01, 0x00, 0x02, 0, 0, 0, 2, b'N', 0, 0, 0,
    ]);
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(b"GPS 31.2N 121.47E");
    t
}

/// A JPEG marker segment: the marker, its length (the payload's plus two) and the payload.
pub fn segment(marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut s = vec![0xFF, marker];
    s.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    s.extend_from_slice(payload);
    s
}

/// An APP1 Exif segment holding [`exif_with_gps`].
pub fn exif_segment() -> Vec<u8> {
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend(exif_with_gps());
    segment(0xE1, &app1)
}

/// SOI, a JFIF APP0 segment, the given segments, then [`image_segments`] (up to EOI).
pub fn jpeg(metadata: &[Vec<u8>], shade: u8) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    j.extend(segment(
        0xE0,
        b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
    ));
    for m in metadata {
        j.extend_from_slice(m);
    }
    j.extend(image_segments(shade));
    j
}

/// A decodable 1×1 grey image and EOI; `shade` fills the quantisation table (another shade,
/// another file).
pub fn image_segments(shade: u8) -> Vec<u8> {
    let mut j = Vec::new();
    let mut dqt = vec![0x00];
    dqt.extend_from_slice(&[shade.max(1); 64]);
    j.extend(segment(0xDB, &dqt));
    // SOF0: 8-bit, 1×1, one component (id 1, 1×1 sampling, table 0).
    j.extend(segment(0xC0, &[8, 0, 1, 0, 1, 1, 1, 0x11, 0]));
    // DC table 0 and AC table 0: one code of length 1 each (DC category 0, AC end of block).
    let mut counts = [0u8; 16];
    counts[0] = 1;
    for class in [0x00, 0x10] {
        let mut dht = vec![class];
        dht.extend_from_slice(&counts);
        dht.push(0);
        j.extend(segment(0xC4, &dht));
    }
    // SOS, then the scan: bits 0 (DC diff 0) and 0 (EOB), padded with ones; EOI.
    j.extend(segment(0xDA, &[1, 1, 0x00, 0, 63, 0]));
    j.push(0x3F);
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

/// A PNG chunk: length, type, data and the CRC of type and data.
pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    c.extend_from_slice(&crc.finalize().to_be_bytes());
    c
}

/// An eXIf chunk holding [`exif_with_gps`] and a tEXt chunk naming the place.
pub fn gps_chunks() -> Vec<Vec<u8>> {
    vec![
        png_chunk(b"eXIf", &exif_with_gps()),
        png_chunk(b"tEXt", b"Comment\x00GPS 31.2 121.47"),
    ]
}

/// A 1×1 red RGB PNG with the given chunks between IHDR and IDAT.
pub fn png(metadata: &[Vec<u8>]) -> Vec<u8> {
    let mut p = b"\x89PNG\r\n\x1a\n".to_vec();
    p.extend(png_chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]));
    for m in metadata {
        p.extend_from_slice(m);
    }
    // zlib: header, one stored block with the scanline (filter 0, r, g, b), Adler-32.
    let raw = [0u8, 200, 30, 30];
    let (a, b) = raw.iter().fold((1u32, 0u32), |(a, b), &x| {
        let a = (a + u32::from(x)) % 65521;
        (a, (b + a) % 65521)
    });
    let mut z = vec![0x78, 0x01, 0x01, 4, 0, 0xFB, 0xFF];
    z.extend_from_slice(&raw);
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    p.extend(png_chunk(b"IDAT", &z));
    p.extend(png_chunk(b"IEND", &[]));
    p
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
