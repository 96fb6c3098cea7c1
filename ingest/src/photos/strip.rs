//! Recognising an image's type from its first bytes, and removing the metadata a phone writes
//! into a photo (EXIF with the GPS position, XMP, text chunks) without decoding the image. Pure
//! functions over bytes: the pixels are copied as they are.

/// The image types a photo may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageType {
    Jpeg,
    Png,
    Webp,
}

impl ImageType {
    pub const MEDIA_TYPES: &'static str = "image/jpeg, image/png or image/webp";

    /// The type a `Content-Type` names (parameters ignored); `None` for any other type.
    pub fn from_media_type(value: &str) -> Option<Self> {
        let essence = value.split(';').next().unwrap_or("").trim();
        [Self::Jpeg, Self::Png, Self::Webp]
            .into_iter()
            .find(|t| essence.eq_ignore_ascii_case(t.media_type()))
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
        }
    }

    /// The type the bytes' signature ("magic bytes") shows.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.starts_with(PNG_SIGNATURE) {
            Some(Self::Png)
        } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else {
            None
        }
    }
}

/// Why an image could not be read far enough to strip it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StripError {
    #[error("the {kind} ends inside a {part}")]
    Truncated {
        kind: &'static str,
        part: &'static str,
    },
    #[error("the {kind} is malformed: {detail}")]
    Malformed {
        kind: &'static str,
        detail: &'static str,
    },
}

fn truncated(kind: &'static str, part: &'static str) -> StripError {
    StripError::Truncated { kind, part }
}

fn malformed(kind: &'static str, detail: &'static str) -> StripError {
    StripError::Malformed { kind, detail }
}

/// The image without its metadata: for JPEG every APPn segment but the JFIF header (EXIF, XMP,
/// ICC, maker notes…) and comments — except that an EXIF orientation other than "upright" is
/// kept, alone in a minimal EXIF block where the original was, since a phone stores a portrait
/// photo's rotation there and nowhere else; for PNG the `eXIf`, `tEXt`, `iTXt` and `zTXt` chunks; for
/// WebP the `EXIF` and `XMP ` chunks (and their flags in `VP8X`). Stripping a stripped image
/// gives the same bytes, so equal pictures get equal content addresses.
pub fn strip_metadata(kind: ImageType, bytes: &[u8]) -> Result<Vec<u8>, StripError> {
    match kind {
        ImageType::Jpeg => strip_jpeg(bytes),
        ImageType::Png => strip_png(bytes),
        ImageType::Webp => strip_webp(bytes),
    }
}

const JPEG: &str = "JPEG";
const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const APP0: u8 = 0xE0;
const APP1: u8 = 0xE1;
const APP15: u8 = 0xEF;
const COM: u8 = 0xFE;

fn strip_jpeg(bytes: &[u8]) -> Result<Vec<u8>, StripError> {
    if !bytes.starts_with(&[0xFF, SOI]) {
        return Err(malformed(JPEG, "it does not start with SOI"));
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&[0xFF, SOI]);
    let mut kept_orientation = false;
    let mut i = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(i), bytes.get(i + 1)) else {
            return Err(if i + 1 >= bytes.len() {
                truncated(JPEG, "marker")
            } else {
                malformed(JPEG, "a segment is not followed by a marker")
            });
        };
        i += 2;
        match marker {
            EOI => {
                // Whatever follows the image (some cameras append a second image or a
                // trailer with metadata) is dropped.
                out.extend_from_slice(&[0xFF, EOI]);
                return Ok(out);
            }
            0xD0..=0xD7 | 0x01 => {
                // Stand-alone markers without a length.
                out.extend_from_slice(&[0xFF, marker]);
                continue;
            }
            _ => {}
        }
        let len = match bytes.get(i..i + 2) {
            Some(l) => usize::from(u16::from_be_bytes([l[0], l[1]])),
            None => return Err(truncated(JPEG, "segment length")),
        };
        if len < 2 {
            return Err(malformed(JPEG, "a segment length is below 2"));
        }
        let segment = bytes
            .get(i - 2..i + len)
            .ok_or_else(|| truncated(JPEG, "segment"))?;
        i += len;
        let payload = &segment[4..];
        let keep = match marker {
            APP0 => payload.starts_with(b"JFIF\0"),
            0xE1..=APP15 | COM => false,
            _ => true,
        };
        if keep {
            out.extend_from_slice(segment);
        } else if marker == APP1 && !kept_orientation {
            if let Some(orientation) = exif_orientation(payload) {
                out.extend_from_slice(&orientation_segment(orientation));
                kept_orientation = true;
            }
        }
        if marker == SOS {
            // Entropy-coded data runs to the next marker that is neither a stuffed 0xFF00
            // nor a restart marker.
            let start = i;
            loop {
                match (bytes.get(i), bytes.get(i + 1)) {
                    (Some(0xFF), Some(0x00 | 0xD0..=0xD7)) => i += 2,
                    (Some(0xFF), Some(_)) => break,
                    (Some(_), _) => i += 1,
                    (None, _) => return Err(truncated(JPEG, "scan")),
                }
            }
            out.extend_from_slice(&bytes[start..i]);
        }
    }
}

const ORIENTATION_TAG: u16 = 0x0112;
const TIFF_SHORT: u16 = 3;

/// The orientation (2–8; 1, upright, counts as none) an APP1 EXIF payload's first IFD holds.
fn exif_orientation(payload: &[u8]) -> Option<u16> {
    let tiff = payload.strip_prefix(b"Exif\0\0")?;
    let big_endian = match tiff.get(0..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |i: usize| {
        let b = tiff.get(i..i.checked_add(2)?)?;
        Some(if big_endian {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        })
    };
    let u32_at = |i: usize| {
        let b = tiff.get(i..i.checked_add(4)?)?;
        let b = [b[0], b[1], b[2], b[3]];
        Some(if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let entries = usize::from(u16_at(ifd)?);
    (0..entries).find_map(|k| {
        let entry = ifd + 2 + 12 * k;
        let is_orientation = u16_at(entry)? == ORIENTATION_TAG && u16_at(entry + 2)? == TIFF_SHORT;
        let value = u16_at(entry + 8)?;
        (is_orientation && (2..=8).contains(&value)).then_some(value)
    })
}

/// An APP1 segment with an EXIF block holding only an orientation.
fn orientation_segment(orientation: u16) -> Vec<u8> {
    let mut s = vec![0xFF, APP1, 0, 34];
    s.extend_from_slice(b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01");
    s.extend_from_slice(&ORIENTATION_TAG.to_be_bytes());
    s.extend_from_slice(&TIFF_SHORT.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 1]);
    s.extend_from_slice(&orientation.to_be_bytes());
    s.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    s
}

const PNG: &str = "PNG";
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
const PNG_METADATA_CHUNKS: [&[u8; 4]; 4] = [b"eXIf", b"tEXt", b"iTXt", b"zTXt"];

fn strip_png(bytes: &[u8]) -> Result<Vec<u8>, StripError> {
    if !bytes.starts_with(PNG_SIGNATURE) {
        return Err(malformed(PNG, "it does not start with the PNG signature"));
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(PNG_SIGNATURE);
    let mut i = PNG_SIGNATURE.len();
    let mut first = true;
    loop {
        let header = bytes
            .get(i..i + 8)
            .ok_or_else(|| truncated(PNG, "chunk header"))?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind: [u8; 4] = [header[4], header[5], header[6], header[7]];
        if first && &kind != b"IHDR" {
            return Err(malformed(PNG, "the first chunk is not IHDR"));
        }
        first = false;
        let end = i
            .checked_add(12)
            .and_then(|n| n.checked_add(len))
            .ok_or_else(|| malformed(PNG, "a chunk length overflows"))?;
        let chunk = bytes.get(i..end).ok_or_else(|| truncated(PNG, "chunk"))?;
        i = end;
        if !PNG_METADATA_CHUNKS.contains(&&kind) {
            out.extend_from_slice(chunk);
        }
        if &kind == b"IEND" {
            return Ok(out);
        }
    }
}

const WEBP: &str = "WebP";
const VP8X_EXIF_FLAG: u8 = 0x08;
const VP8X_XMP_FLAG: u8 = 0x04;

fn strip_webp(bytes: &[u8]) -> Result<Vec<u8>, StripError> {
    if ImageType::sniff(bytes) != Some(ImageType::Webp) {
        return Err(malformed(WEBP, "it does not start with RIFF….WEBP"));
    }
    let riff_len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let body_end = riff_len
        .checked_add(8)
        .ok_or_else(|| malformed(WEBP, "the RIFF length overflows"))?;
    if body_end > bytes.len() {
        return Err(truncated(WEBP, "RIFF container"));
    }
    let mut chunks = Vec::with_capacity(body_end);
    let mut i = 12;
    while i < body_end {
        let header = bytes
            .get(i..i + 8)
            .filter(|_| i + 8 <= body_end)
            .ok_or_else(|| truncated(WEBP, "chunk header"))?;
        let fourcc: [u8; 4] = [header[0], header[1], header[2], header[3]];
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        // Chunks are padded to an even length.
        let end = (i + 8)
            .checked_add(len + (len & 1))
            .ok_or_else(|| malformed(WEBP, "a chunk length overflows"))?;
        if end > body_end {
            return Err(truncated(WEBP, "chunk"));
        }
        let chunk = &bytes[i..end];
        i = end;
        match &fourcc {
            b"EXIF" | b"XMP " => {}
            b"VP8X" => {
                if len < 1 {
                    return Err(malformed(WEBP, "VP8X has no flags"));
                }
                let mut copy = chunk.to_vec();
                copy[8] &= !(VP8X_EXIF_FLAG | VP8X_XMP_FLAG);
                chunks.extend_from_slice(&copy);
            }
            _ => chunks.extend_from_slice(chunk),
        }
    }
    let mut out = Vec::with_capacity(12 + chunks.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((chunks.len() + 4) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&chunks);
    Ok(out)
}

#[cfg(test)]
mod tests {
    //! The images are built byte by byte: a JPEG and a PNG by `sample_images` (shared with the
    //! integration tests), a lossless WebP here, each with an EXIF block holding a GPS position.
    use super::*;
    use crate::photos::sample_images::{
        contains, exif_segment, exif_with_gps, gps_chunks, image_segments, jpeg, png, png_chunk,
        segment,
    };
    use proptest::prelude::*;

    #[test]
    fn jpeg_loses_exif_xmp_and_comments_and_keeps_the_image() {
        let xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>GPSLatitude</x:xmpmeta>";
        let photo = jpeg(
            &[
                exif_segment(),
                segment(0xE1, xmp),
                segment(0xE2, b"ICC_PROFILE\x00..."),
                segment(COM, b"taken at home"),
            ],
            1,
        );
        assert!(contains(&photo, b"GPS"));
        let stripped = strip_metadata(ImageType::Jpeg, &photo).unwrap();
        assert_eq!(stripped, jpeg(&[], 1));
        for gone in [
            &b"Exif"[..],
            b"GPS",
            b"xmpmeta",
            b"ICC_PROFILE",
            b"taken at home",
        ] {
            assert!(
                !contains(&stripped, gone),
                "{}",
                String::from_utf8_lossy(gone)
            );
        }
        assert!(
            stripped.ends_with(&image_segments(1)),
            "the image is unchanged"
        );
        assert_eq!(ImageType::sniff(&stripped), Some(ImageType::Jpeg));
    }

    /// A little-endian EXIF block (as most phones write) with an orientation and a GPS IFD.
    fn exif_with_orientation(orientation: u16) -> Vec<u8> {
        let mut t = b"Exif\0\0II\x2a\0\x08\0\0\0".to_vec();
        t.extend_from_slice(&[2, 0]);
        t.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0]);
        t.extend_from_slice(&orientation.to_le_bytes());
        t.extend_from_slice(&[0, 0]);
        t.extend_from_slice(&[0x25, 0x88, 4, 0, 1, 0, 0, 0, 38, 0, 0, 0]);
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend_from_slice(&[1, 0, 1, 0, 2, 0, 2, 0, 0, 0, b'N', 0, 0, 0, 0, 0, 0, 0]);
        t.extend_from_slice(b"GPS 31.2N 121.47E");
        t
    }

    #[test]
    fn jpeg_keeps_only_a_turning_orientation_of_its_exif() {
        let turned = jpeg(&[segment(0xE1, &exif_with_orientation(6))], 1);
        let stripped = strip_metadata(ImageType::Jpeg, &turned).unwrap();
        assert!(!contains(&stripped, b"GPS"));
        let kept = orientation_segment(6);
        assert_eq!(
            u16::from_be_bytes([kept[2], kept[3]]) as usize,
            kept.len() - 2
        );
        assert_eq!(exif_orientation(&kept[4..]), Some(6), "readable again");
        assert_eq!(stripped, jpeg(&[kept], 1));
        assert_eq!(
            strip_metadata(ImageType::Jpeg, &stripped).unwrap(),
            stripped
        );
        // Upright is the default: nothing is kept.
        let upright = jpeg(&[segment(0xE1, &exif_with_orientation(1))], 1);
        assert_eq!(
            strip_metadata(ImageType::Jpeg, &upright).unwrap(),
            jpeg(&[], 1)
        );
    }

    #[test]
    fn jpeg_scan_data_with_stuffed_bytes_and_restarts_is_copied_and_trailers_dropped() {
        let mut photo = jpeg(&[], 1);
        photo.truncate(photo.len() - 3); // the scan byte and EOI
        let scan = [0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56];
        photo.extend_from_slice(&scan);
        photo.extend_from_slice(&[0xFF, EOI]);
        let mut with_trailer = photo.clone();
        with_trailer.extend_from_slice(b"trailing maker data with GPS");
        assert_eq!(
            strip_metadata(ImageType::Jpeg, &with_trailer).unwrap(),
            photo
        );
    }

    #[test]
    fn png_loses_exif_and_text_chunks() {
        let mut chunks = gps_chunks();
        chunks.extend([
            png_chunk(
                b"iTXt",
                b"XML:com.adobe.xmp\x00\x00\x00\x00\x00<x:xmpmeta/>",
            ),
            png_chunk(b"zTXt", b"Author\x00\x00x"),
            png_chunk(b"gAMA", &[0, 0, 0xB1, 0x8F]),
        ]);
        let photo = png(&chunks);
        let stripped = strip_metadata(ImageType::Png, &photo).unwrap();
        assert_eq!(stripped, png(&[png_chunk(b"gAMA", &[0, 0, 0xB1, 0x8F])]));
        assert!(!contains(&stripped, b"GPS"));
        assert_eq!(strip_metadata(ImageType::Png, &stripped).unwrap(), stripped);
    }

    fn webp_chunk(fourcc: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = fourcc.to_vec();
        c.extend_from_slice(&(data.len() as u32).to_le_bytes());
        c.extend_from_slice(data);
        if data.len() % 2 == 1 {
            c.push(0);
        }
        c
    }

    fn webp(flags: u8, chunks: &[Vec<u8>]) -> Vec<u8> {
        // VP8X: flags, 3 reserved bytes, canvas width−1 and height−1 (24 bits each).
        let mut body = webp_chunk(b"VP8X", &[flags, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        // A lossless 1×1 bitstream header (signature 0x2f, 14-bit width−1 and height−1).
        body.extend(webp_chunk(b"VP8L", &[0x2F, 0, 0, 0, 0x10, 0x07]));
        for c in chunks {
            body.extend_from_slice(c);
        }
        let mut w = b"RIFF".to_vec();
        w.extend_from_slice(&((body.len() + 4) as u32).to_le_bytes());
        w.extend_from_slice(b"WEBP");
        w.extend(body);
        w
    }

    #[test]
    fn webp_loses_exif_and_xmp_chunks_and_their_flags() {
        let exif = exif_with_gps();
        assert_eq!(exif.len() % 2, 1, "an odd length: the chunk is padded");
        let photo = webp(
            VP8X_EXIF_FLAG | VP8X_XMP_FLAG | 0x10,
            &[
                webp_chunk(b"EXIF", &exif),
                webp_chunk(b"XMP ", b"<x:xmpmeta/>"),
            ],
        );
        let stripped = strip_metadata(ImageType::Webp, &photo).unwrap();
        assert_eq!(stripped, webp(0x10, &[]));
        assert!(!contains(&stripped, b"GPS"));
    }

    #[test]
    fn truncated_and_malformed_images_are_refused() {
        let j = jpeg(&[], 1);
        assert_eq!(
            strip_metadata(ImageType::Jpeg, &j[..j.len() - 2]),
            Err(truncated(JPEG, "scan"))
        );
        assert_eq!(
            strip_metadata(ImageType::Jpeg, &j[..25]),
            Err(truncated(JPEG, "segment"))
        );
        let p = png(&[]);
        assert_eq!(
            strip_metadata(ImageType::Png, &p[..p.len() - 12]),
            Err(truncated(PNG, "chunk header"))
        );
        assert!(matches!(
            strip_metadata(
                ImageType::Png,
                b"\x89PNG\r\n\x1a\n\0\0\0\0IEND\xae\x42\x60\x82"
            ),
            Err(StripError::Malformed { .. })
        ));
        let w = webp(0, &[]);
        assert_eq!(
            strip_metadata(ImageType::Webp, &w[..w.len() - 2]),
            Err(truncated(WEBP, "RIFF container"))
        );
    }

    #[test]
    fn types_come_from_media_types_and_signatures() {
        assert_eq!(
            ImageType::from_media_type("image/JPEG; q=1"),
            Some(ImageType::Jpeg)
        );
        assert_eq!(ImageType::from_media_type("image/gif"), None);
        assert_eq!(ImageType::sniff(&jpeg(&[], 1)), Some(ImageType::Jpeg));
        assert_eq!(ImageType::sniff(&png(&[])), Some(ImageType::Png));
        assert_eq!(ImageType::sniff(&webp(0, &[])), Some(ImageType::Webp));
        assert_eq!(ImageType::sniff(b"GIF89a"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            kind in prop_oneof![Just(ImageType::Jpeg), Just(ImageType::Png), Just(ImageType::Webp)],
            tail in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut bytes = match kind {
                ImageType::Jpeg => vec![0xFF, SOI],
                ImageType::Png => PNG_SIGNATURE.to_vec(),
                ImageType::Webp => b"RIFF\x20\0\0\0WEBP".to_vec(),
            };
            bytes.extend(tail);
            if let Ok(stripped) = strip_metadata(kind, &bytes) {
                prop_assert_eq!(strip_metadata(kind, &stripped), Ok(stripped.clone()));
            }
        }
    }
}
