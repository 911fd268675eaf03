//! Decoding to 8-bit RGB the way `PIL.Image.open(path).convert("RGB")` does, with EXIF orientation
//! applied and a decompression-bomb guard.

use std::io::Cursor;

use image::error::{ImageError, LimitErrorKind};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::{Error, Result};

/// Default [`DecodeLimits::max_pixels`]: 100 megapixels (PIL warns above 89 MP and refuses above
/// 179 MP).
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Limits applied before and while decoding, against decompression bombs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted `width × height`, checked on the header before any pixel buffer is
    /// allocated.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl DecodeLimits {
    /// The `image` crate limits matching these: no side longer than `max_pixels` (the other side is
    /// at least 1) and at most 8 bytes per pixel (16-bit RGBA) plus 64 MiB of decoder state.
    fn to_image_limits(self) -> image::Limits {
        let mut limits = image::Limits::default();
        let side = u32::try_from(self.max_pixels).unwrap_or(u32::MAX);
        limits.max_image_width = Some(side);
        limits.max_image_height = Some(side);
        limits.max_alloc = Some(self.max_pixels.saturating_mul(8).saturating_add(64 << 20));
        limits
    }
}

/// Decodes an encoded image (JPEG, PNG, GIF, BMP, TIFF or WebP, recognised by content) into 8-bit
/// RGB the way PIL's `Image.open(..).convert("RGB")` would, after applying the EXIF orientation.
///
/// - **EXIF orientation is applied** (like `ImageOps.exif_transpose`; PIL itself does not rotate
///   on open, but torchvision pipelines usually call `exif_transpose`, and a sideways photo is
///   never what one wants to classify). Orientation 6 rotates 90° clockwise.
/// - Gray is replicated; alpha (gray + alpha, RGBA, transparent palette entries) is **dropped, not
///   composited** — as PIL's `convert("RGB")`; palette images give their palette colours.
/// - 16-bit channels keep their **high byte**: what PIL does for 16-bit RGB(A) PNGs. For 16-bit
///   grayscale PIL opens mode `I;16` and `convert("RGB")` clips to 255 (mostly white); we take the
///   high byte too, a deliberate deviation.
/// - TIFF: 8/16-bit gray, RGB(A), palette and CMYK are decoded. Floating-point RGB TIFFs (which
///   PIL cannot open) are clamped to [0, 1] and scaled. Single-channel float (PIL mode `F`),
///   YCbCr and CIELab TIFFs, which PIL converts, are **skipped** with a reason that names the
///   pixel type and the fix (convert to 8-bit RGB).
/// - CMYK JPEGs are read as Adobe-inverted CMYK and converted with `R = C·K/255` on the stored
///   values (the `image` crate's decoder, zune-jpeg, does this; Pillow always assumes Adobe
///   polarity too and its `cmyk2rgb` gives the same values). YCCK goes through CMYK in both.
/// - Animated GIFs (and multi-page TIFFs) give their first frame.
/// - **A truncated JPEG is an error**, like PIL (`image file is truncated`) and unlike the
///   `image` crate, which would fill the missing part with grey. The check is structural: the
///   marker structure must reach the end-of-image marker, so a JPEG that is complete but lacks
///   only its final `FF D9` (which PIL accepts) is rejected too.
/// - Dimensions are checked against `limits` from the header, before any pixel buffer is
///   allocated; the `image` crate's own limits are set as well.
///
/// Errors are [`Error::Image`] with a short reason: `empty file`, `not an image (unrecognised
/// format)`, `truncated or corrupt JPEG: …`, `image is 30000×30000 (900 MP), over the 100 MP
/// limit`, …
pub fn decode_rgb(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(Error::image("empty file"));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::image(format!("unreadable image: {e}")))?;
    let Some(format) = reader.format() else {
        if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
            return Err(Error::image(
                "HEIF/HEIC/AVIF images are not supported; convert them to JPEG or PNG",
            ));
        }
        return Err(Error::image("not an image (unrecognised format)"));
    };
    if let Some((w, h)) = png_header_size(bytes) {
        // The PNG decoder reads up to the first IDAT before reporting dimensions.
        check_size(w, h, limits)?;
    }
    reader.limits(limits.to_image_limits());
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| describe(e, format, limits, bytes))?;
    let (w, h) = decoder.dimensions();
    check_size(w, h, limits)?;
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(bytes)?;
    }
    // A malformed EXIF block is not worth rejecting the picture for.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let img =
        DynamicImage::from_decoder(decoder).map_err(|e| describe(e, format, limits, bytes))?;
    let rgb = to_rgb_like_pil(img);
    Ok(if orientation == Orientation::NoTransforms {
        rgb
    } else {
        let mut dynamic = DynamicImage::ImageRgb8(rgb);
        dynamic.apply_orientation(orientation);
        dynamic.into_rgb8()
    })
}

/// Rejects empty images and images over the pixel limit.
fn check_size(w: u32, h: u32, limits: &DecodeLimits) -> Result<()> {
    if w == 0 || h == 0 {
        return Err(Error::image(format!("image is {w}×{h} (empty)")));
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        return Err(Error::TooLarge {
            reason: format!(
                "image is {w}×{h} ({} MP), over the {} MP limit",
                megapixels(pixels),
                megapixels(limits.max_pixels)
            ),
        });
    }
    Ok(())
}

/// Width and height from a PNG's IHDR chunk, which must come first.
fn png_header_size(b: &[u8]) -> Option<(u32, u32)> {
    if b.len() < 24 || !b.starts_with(b"\x89PNG\r\n\x1a\n") || &b[12..16] != b"IHDR" {
        return None;
    }
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Some((be(16), be(20)))
}

/// Megapixels for messages: whole numbers when large, more decimals when small.
fn megapixels(pixels: u64) -> String {
    let mp = pixels as f64 / 1e6;
    if pixels >= 10_000_000 {
        format!("{}", (pixels + 500_000) / 1_000_000)
    } else if pixels >= 1_000_000 {
        format!("{mp:.1}")
    } else {
        format!("{mp:.2}")
    }
}

/// Human name of a format for messages.
fn format_name(format: ImageFormat) -> String {
    match format {
        ImageFormat::Jpeg => "JPEG".into(),
        ImageFormat::Png => "PNG".into(),
        ImageFormat::Gif => "GIF".into(),
        ImageFormat::WebP => "WebP".into(),
        ImageFormat::Tiff => "TIFF".into(),
        ImageFormat::Bmp => "BMP".into(),
        other => other
            .extensions_str()
            .first()
            .map_or_else(|| format!("{other:?}"), |e| e.to_ascii_uppercase()),
    }
}

/// Turns an `image` error into a short reason.
fn describe(err: ImageError, format: ImageFormat, limits: &DecodeLimits, bytes: &[u8]) -> Error {
    let name = format_name(format);
    let inner = |e: &dyn std::error::Error| match e.source() {
        Some(src) => src.to_string(),
        None => e.to_string(),
    };
    if let ImageError::Limits(e) = &err {
        return Error::TooLarge {
            reason: match e.kind() {
                LimitErrorKind::DimensionError => format!(
                    "image dimensions exceed the {} MP limit",
                    megapixels(limits.max_pixels)
                ),
                _ => format!("image too large to decode ({e})"),
            },
        };
    }
    Error::image(match err {
        ImageError::Decoding(e) if format == ImageFormat::Jpeg => {
            format!("truncated or corrupt JPEG: {}", inner(&e))
        }
        ImageError::Decoding(e) => format!("corrupt {name}: {}", inner(&e)),
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("truncated {name} file")
        }
        ImageError::IoError(e) => format!("unreadable {name}: {e}"),
        ImageError::Unsupported(e) => match e.kind() {
            image::error::UnsupportedErrorKind::Format(_) => {
                format!("unsupported image format ({name})")
            }
            _ if format == ImageFormat::Tiff => match tiff_pixel_type(bytes) {
                Some(kind) => format!(
                    "TIFF with {kind} pixels is not supported; convert it to 8-bit RGB (PNG or JPEG)"
                ),
                None => format!("unsupported {name} variant: {e}"),
            },
            _ => format!("unsupported {name} variant: {e}"),
        },
        ImageError::Limits(_) => unreachable!("handled above"),
        ImageError::Parameter(e) => format!("unusable {name}: {e}"),
        ImageError::Encoding(e) => format!("unusable {name}: {e}"),
    })
}

/// PIL's `convert("RGB")`, moving the buffer when it already is RGB8.
fn to_rgb_like_pil(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let from_raw = |v: Vec<u8>| RgbImage::from_raw(w, h, v).expect("buffer size matches");
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageRgba8(rgba) => {
            // Drop alpha in place: RGBA → RGB within the same allocation.
            let mut v = rgba.into_raw();
            let n = v.len() / 4;
            for i in 1..n {
                v.copy_within(4 * i..4 * i + 3, 3 * i);
            }
            v.truncate(3 * n);
            from_raw(v)
        }
        DynamicImage::ImageLuma8(g) => from_raw(g.as_raw().iter().flat_map(|&l| [l; 3]).collect()),
        DynamicImage::ImageLumaA8(ga) => from_raw(
            ga.as_raw()
                .chunks_exact(2)
                .flat_map(|p| [p[0]; 3])
                .collect(),
        ),
        DynamicImage::ImageLuma16(g) => from_raw(
            g.as_raw()
                .iter()
                .flat_map(|&l| [(l >> 8) as u8; 3])
                .collect(),
        ),
        DynamicImage::ImageLumaA16(ga) => from_raw(
            ga.as_raw()
                .chunks_exact(2)
                .flat_map(|p| [(p[0] >> 8) as u8; 3])
                .collect(),
        ),
        DynamicImage::ImageRgb16(rgb) => {
            from_raw(rgb.as_raw().iter().map(|&c| (c >> 8) as u8).collect())
        }
        DynamicImage::ImageRgba16(rgba) => from_raw(
            rgba.as_raw()
                .chunks_exact(4)
                .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
                .collect(),
        ),
        // Floating point (TIFF): the `image` crate clamps to [0, 1] and rounds.
        other => other.to_rgb8(),
    }
}

/// "YCbCr, 8-bit integer" etc. from the first IFD of a TIFF (photometric interpretation, bits
/// and format of the first sample), for skip reasons.
fn tiff_pixel_type(b: &[u8]) -> Option<String> {
    let le = match b.get(..4)? {
        [b'I', b'I', 42, 0] => true,
        [b'M', b'M', 0, 42] => false,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let v = [*b.get(o)?, *b.get(o + 1)?];
        Some(if le {
            u16::from_le_bytes(v)
        } else {
            u16::from_be_bytes(v)
        })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let v = [*b.get(o)?, *b.get(o + 1)?, *b.get(o + 2)?, *b.get(o + 3)?];
        Some(if le {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        })
    };
    let ifd = u32_at(4)? as usize;
    let n = u16_at(ifd)? as usize;
    let (mut photometric, mut bits, mut format) = (None, None, 1u16);
    for i in 0..n.min(512) {
        let e = ifd + 2 + 12 * i;
        let (tag, typ, count) = (u16_at(e)?, u16_at(e + 2)?, u32_at(e + 4)?);
        // A SHORT value sits in the entry itself when it fits, else at the offset it gives.
        let first = if typ == 3 && count <= 2 {
            u16_at(e + 8)
        } else if typ == 3 {
            u16_at(u32_at(e + 8)? as usize)
        } else {
            None
        };
        match tag {
            262 => photometric = first,
            258 => bits = first,
            339 => format = first.unwrap_or(1),
            _ => {}
        }
    }
    let kind = match photometric? {
        0 | 1 => "grayscale",
        2 => "RGB",
        3 => "palette",
        5 => "CMYK",
        6 => "YCbCr",
        8..=10 => "CIELab",
        32844 | 32845 => "LogLuv",
        _ => "unusual",
    };
    let fmt = match format {
        2 => "signed integer",
        3 => "floating-point",
        _ => "integer",
    };
    Some(format!("{kind}, {}-bit {fmt}", bits.unwrap_or(8)))
}

/// Checks that a JPEG's marker structure reaches the end-of-image marker (`FF D9`): segments are
/// skipped by their length (so an EXIF thumbnail's own `FF D9` does not count) and entropy-coded
/// data by scanning for the next marker that is not a stuffed `FF 00`, a restart marker or fill.
fn check_jpeg_complete(b: &[u8]) -> Result<()> {
    let truncated =
        || Error::image("truncated or corrupt JPEG: no end-of-image marker (file cut short?)");
    let mut i = 2; // after SOI, which format guessing has seen
    loop {
        // Find the next marker, skipping stray bytes (libjpeg warns and skips them too).
        match b
            .get(i..)
            .and_then(|rest| rest.iter().position(|&x| x == 0xFF))
        {
            Some(p) => i += p,
            None => return Err(truncated()),
        }
        while b.get(i) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return Err(truncated());
        };
        i += 1;
        match marker {
            0xD9 => return Ok(()),
            // Stand-alone markers: SOI, TEM, RSTn.
            0xD8 | 0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = b.get(i..i + 2) else {
            return Err(truncated());
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return Err(Error::image(
                "truncated or corrupt JPEG: bad segment length",
            ));
        }
        i += len;
        if i > b.len() {
            return Err(truncated());
        }
        if marker == 0xDA {
            // Entropy-coded data follows the scan header, up to the next real marker.
            loop {
                match b
                    .get(i..)
                    .and_then(|rest| rest.iter().position(|&x| x == 0xFF))
                {
                    Some(p) => i += p,
                    None => return Err(truncated()),
                }
                match b.get(i + 1) {
                    None => return Err(truncated()),
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(0xFF) => i += 1,
                    Some(_) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {

    /// A 2×2, 3-sample, uncompressed little-endian TIFF with the given photometric
    /// interpretation, bits per sample and sample format.
    fn tiny_tiff(photometric: u16, bits: u16, sample_format: u16, spp: u16) -> Vec<u8> {
        let data_len = 4 * spp as u32 * (bits as u32 / 8);
        let entries: [(u16, u16, u32, u32); 10] = [
            (256, 3, 1, 2),
            (257, 3, 1, 2),
            (258, 3, spp as u32, 0), // patched below: offset of the per-sample bits
            (259, 3, 1, 1),
            (262, 3, 1, photometric as u32),
            (273, 4, 1, 0), // patched below: strip offset
            (277, 3, 1, spp as u32),
            (278, 3, 1, 2),
            (279, 4, 1, data_len),
            (339, 3, 1, sample_format as u32),
        ];
        let ifd = 8u32;
        let after_ifd = ifd + 2 + 12 * entries.len() as u32 + 4;
        let bits_at = after_ifd;
        let data_at = bits_at + 2 * spp as u32;
        let mut b = b"II*\0".to_vec();
        b.extend_from_slice(&ifd.to_le_bytes());
        b.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, typ, count, value) in entries {
            let value = match tag {
                258 if spp > 2 => bits_at,
                258 => bits as u32,
                273 => data_at,
                _ => value,
            };
            b.extend_from_slice(&tag.to_le_bytes());
            b.extend_from_slice(&typ.to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
            b.extend_from_slice(&value.to_le_bytes());
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        for _ in 0..spp {
            b.extend_from_slice(&bits.to_le_bytes());
        }
        b.extend(std::iter::repeat_n(0x40u8, data_len as usize));
        b
    }

    #[test]
    fn unsupported_tiff_pixel_types_are_named_in_the_skip_reason() {
        let limits = DecodeLimits::default();
        for (photometric, bits, fmt, spp, want) in [
            (6, 8, 1, 3, "YCbCr, 8-bit integer"),
            (8, 8, 1, 3, "CIELab, 8-bit integer"),
            (1, 32, 3, 1, "grayscale, 32-bit floating-point"),
        ] {
            let tiff = tiny_tiff(photometric, bits, fmt, spp);
            assert_eq!(tiff_pixel_type(&tiff).as_deref(), Some(want));
            let err = decode_rgb(&tiff, &limits).unwrap_err().to_string();
            assert!(
                err.contains(want) && err.contains("convert"),
                "{want}: {err}"
            );
        }
        // An ordinary 8-bit RGB TIFF of the same shape decodes.
        let rgb = tiny_tiff(2, 8, 1, 3);
        assert_eq!(decode_rgb(&rgb, &limits).unwrap().dimensions(), (2, 2));
    }

    use super::*;
    use image::codecs::jpeg::JpegEncoder;
    use image::codecs::png::PngEncoder;
    use image::{ExtendedColorType, ImageEncoder, Rgb};

    fn limits() -> DecodeLimits {
        DecodeLimits::default()
    }

    fn reason(err: Error) -> String {
        match err {
            Error::Image { reason } | Error::TooLarge { reason } => reason,
            other => panic!("expected an image error, got {other:?}"),
        }
    }

    fn encode_png(w: u32, h: u32, data: &[u8], color: ExtendedColorType) -> Vec<u8> {
        let mut out = Vec::new();
        PngEncoder::new(&mut out)
            .write_image(data, w, h, color)
            .unwrap();
        out
    }

    fn encode_jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, quality)
            .encode_image(img)
            .unwrap();
        out
    }

    // --- a minimal PNG writer (stored deflate blocks) for what the encoder cannot write ---

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }

    fn zlib_stored(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0x78, 0x01];
        let blocks: Vec<&[u8]> = data.chunks(65535).collect();
        for (i, block) in blocks.iter().enumerate() {
            out.push(u8::from(i + 1 == blocks.len()));
            let len = block.len() as u16;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(block);
        }
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        out.extend_from_slice(&((b << 16) | a).to_be_bytes());
        out
    }

    /// A PNG with the given header fields, extra chunks before IDAT, and unfiltered scanlines
    /// (`None`: no IDAT at all, a header-only file).
    fn raw_png(
        w: u32,
        h: u32,
        depth: u8,
        color_type: u8,
        extra: &[(&[u8; 4], Vec<u8>)],
        rows: Option<&[Vec<u8>]>,
    ) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[depth, color_type, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        for (kind, data) in extra {
            chunk(&mut out, kind, data);
        }
        if let Some(rows) = rows {
            let raw: Vec<u8> = rows
                .iter()
                .flat_map(|r| std::iter::once(0u8).chain(r.iter().copied()))
                .collect();
            chunk(&mut out, b"IDAT", &zlib_stored(&raw));
        }
        chunk(&mut out, b"IEND", &[]);
        out
    }

    #[test]
    fn gray_and_gray_alpha_are_replicated_and_alpha_dropped() {
        let gray = encode_png(3, 1, &[0, 100, 255], ExtendedColorType::L8);
        let img = decode_rgb(&gray, &limits()).unwrap();
        assert_eq!(img.as_raw(), &[0, 0, 0, 100, 100, 100, 255, 255, 255]);

        let ga = encode_png(2, 1, &[40, 0, 200, 128], ExtendedColorType::La8);
        let img = decode_rgb(&ga, &limits()).unwrap();
        // No compositing: a fully transparent pixel keeps its colour.
        assert_eq!(img.as_raw(), &[40, 40, 40, 200, 200, 200]);
    }

    #[test]
    fn rgba_drops_alpha_without_compositing() {
        let px = [10, 20, 30, 0, 40, 50, 60, 255, 70, 80, 90, 128];
        let png = encode_png(3, 1, &px, ExtendedColorType::Rgba8);
        let img = decode_rgb(&png, &limits()).unwrap();
        assert_eq!(img.as_raw(), &[10, 20, 30, 40, 50, 60, 70, 80, 90]);
    }

    #[test]
    fn sixteen_bit_keeps_the_high_byte() {
        // 0x12FF would round to 0x13 with the `image` crate's conversion; PIL takes 0x12.
        let rgb16: [u16; 6] = [0x12FF, 0x0080, 0xFFFF, 0x0000, 0x7F7F, 0x8001];
        let bytes: Vec<u8> = rgb16.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let png = encode_png(2, 1, &bytes, ExtendedColorType::Rgb16);
        let img = decode_rgb(&png, &limits()).unwrap();
        assert_eq!(img.as_raw(), &[0x12, 0x00, 0xFF, 0x00, 0x7F, 0x80]);

        // 16-bit gray: high byte as well (PIL would clip to 255 — documented deviation).
        let row = vec![0x12, 0x34, 0xAB, 0xCD];
        let png = raw_png(2, 1, 16, 0, &[], Some(&[row]));
        let img = decode_rgb(&png, &limits()).unwrap();
        assert_eq!(img.as_raw(), &[0x12, 0x12, 0x12, 0xAB, 0xAB, 0xAB]);
    }

    #[test]
    fn palette_gives_palette_colours_even_when_transparent() {
        let plte = vec![255, 0, 0, 0, 255, 0, 0, 0, 255];
        let trns = vec![255, 0]; // entry 1 fully transparent
        let rows = [vec![0u8, 1, 2], vec![2, 1, 0]];
        for extra in [
            vec![(b"PLTE", plte.clone())],
            vec![(b"PLTE", plte.clone()), (b"tRNS", trns.clone())],
        ] {
            let png = raw_png(3, 2, 8, 3, &extra, Some(&rows));
            let img = decode_rgb(&png, &limits()).unwrap();
            assert_eq!(img.dimensions(), (3, 2));
            assert_eq!(
                img.as_raw(),
                &[255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 255, 0, 255, 0, 255, 0, 0]
            );
        }
        // 1-bit gray expands to 0/255, like PIL's mode "1" → RGB.
        let png = raw_png(3, 1, 1, 0, &[], Some(&[vec![0b1010_0000]]));
        let img = decode_rgb(&png, &limits()).unwrap();
        assert_eq!(img.as_raw(), &[255, 255, 255, 0, 0, 0, 255, 255, 255]);
        // 2- and 4-bit gray scale to 0..=255 too (PIL's "L;2" / "L;4" unpackers).
        let png = raw_png(4, 1, 2, 0, &[], Some(&[vec![0b0001_1011]]));
        let img = decode_rgb(&png, &limits()).unwrap();
        let firsts: Vec<u8> = img.as_raw().iter().step_by(3).copied().collect();
        assert_eq!(firsts, [0, 85, 170, 255]);
        let png = raw_png(2, 1, 4, 0, &[], Some(&[vec![0x1F]]));
        let img = decode_rgb(&png, &limits()).unwrap();
        assert_eq!(img.as_raw(), &[17, 17, 17, 255, 255, 255]);
    }

    #[test]
    fn animated_gif_gives_the_first_frame() {
        use image::codecs::gif::GifEncoder;
        use image::{Delay, Frame, RgbaImage};
        let mut out = Vec::new();
        {
            let mut enc = GifEncoder::new(&mut out);
            let red = RgbaImage::from_pixel(4, 3, image::Rgba([255, 0, 0, 255]));
            let blue = RgbaImage::from_pixel(4, 3, image::Rgba([0, 0, 255, 255]));
            enc.encode_frames([
                Frame::from_parts(red, 0, 0, Delay::from_numer_denom_ms(100, 1)),
                Frame::from_parts(blue, 0, 0, Delay::from_numer_denom_ms(100, 1)),
            ])
            .unwrap();
        }
        let img = decode_rgb(&out, &limits()).unwrap();
        assert_eq!(img.dimensions(), (4, 3));
        assert!(
            img.pixels().all(|p| *p == Rgb([255, 0, 0])),
            "{:?}",
            img.get_pixel(0, 0)
        );
    }

    /// Splices an APP1 EXIF segment holding only an orientation tag right after SOI.
    fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0]); // value padding
        tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        let mut app1 = b"Exif\x00\x00".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_6_rotates_clockwise() {
        // 32×16: left half red, right half blue.
        let img = RgbImage::from_fn(32, 16, |x, _| {
            if x < 16 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let jpeg = with_exif_orientation(&encode_jpeg(&img, 95), 6);
        let out = decode_rgb(&jpeg, &limits()).unwrap();
        // Rotated 90° clockwise: 16 wide, 32 tall, the left half now on top.
        assert_eq!(out.dimensions(), (16, 32));
        let top = out.get_pixel(8, 4);
        let bottom = out.get_pixel(8, 28);
        assert!(top[0] > 200 && top[2] < 60, "top {top:?}");
        assert!(bottom[2] > 200 && bottom[0] < 60, "bottom {bottom:?}");
        // Orientation 1 leaves it alone.
        let upright = decode_rgb(&with_exif_orientation(&encode_jpeg(&img, 95), 1), &limits());
        assert_eq!(upright.unwrap().dimensions(), (32, 16));
    }

    #[test]
    fn header_only_png_bomb_is_rejected_before_allocating() {
        // Header only, and with a first (tiny) row of data as a real bomb would have.
        let first_row = [vec![0u8; 90_000]];
        for rows in [None, Some(&first_row[..])] {
            let bomb = raw_png(30000, 30000, 8, 2, &[], rows);
            let start = std::time::Instant::now();
            let err = reason(decode_rgb(&bomb, &limits()).unwrap_err());
            assert_eq!(err, "image is 30000×30000 (900 MP), over the 100 MP limit");
            assert!(start.elapsed().as_millis() < 500, "{:?}", start.elapsed());
        }
        // Other formats are checked from the decoder's header: a GIF whose logical screen is
        // patched to 20000×20000 around a 2×2 frame.
        let mut gif = Vec::new();
        image::codecs::gif::GifEncoder::new(&mut gif)
            .encode(&[255; 16], 2, 2, ExtendedColorType::Rgba8)
            .unwrap();
        gif[6..8].copy_from_slice(&20000u16.to_le_bytes());
        gif[8..10].copy_from_slice(&20000u16.to_le_bytes());
        let err = reason(decode_rgb(&gif, &limits()).unwrap_err());
        assert_eq!(err, "image is 20000×20000 (400 MP), over the 100 MP limit");
        // A lower limit applies as well.
        let png = encode_png(200, 100, &vec![0; 200 * 100 * 3], ExtendedColorType::Rgb8);
        let err = reason(decode_rgb(&png, &DecodeLimits { max_pixels: 10_000 }).unwrap_err());
        assert_eq!(err, "image is 200×100 (0.02 MP), over the 0.01 MP limit");
    }

    #[test]
    fn garbage_is_rejected_with_a_short_reason() {
        assert_eq!(
            reason(decode_rgb(&[], &limits()).unwrap_err()),
            "empty file"
        );
        let mut state = 0x1234_5678u32;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            })
            .collect();
        assert_eq!(
            reason(decode_rgb(&random, &limits()).unwrap_err()),
            "not an image (unrecognised format)"
        );
        assert_eq!(
            reason(decode_rgb(b"hello, world", &limits()).unwrap_err()),
            "not an image (unrecognised format)"
        );
        // PNG signature followed by junk.
        let mut junk = b"\x89PNG\r\n\x1a\n".to_vec();
        junk.extend_from_slice(&random[..100]);
        let err = reason(decode_rgb(&junk, &limits()).unwrap_err());
        assert!(err.contains("PNG"), "{err}");
    }

    #[test]
    fn truncated_files_are_errors() {
        let img = RgbImage::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, 77]));
        let jpeg = encode_jpeg(&img, 90);
        assert!(decode_rgb(&jpeg, &limits()).is_ok());
        for cut in [jpeg.len() / 2, jpeg.len() - 20, jpeg.len() - 2, 100, 3] {
            let err = reason(decode_rgb(&jpeg[..cut], &limits()).unwrap_err());
            assert!(
                err.starts_with("truncated or corrupt JPEG"),
                "cut {cut}: {err}"
            );
        }
        // Trailing bytes after EOI are fine (PIL accepts them too).
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(b"trailing garbage");
        assert!(decode_rgb(&trailing, &limits()).is_ok());
        // An EXIF thumbnail's FF D9 inside APP1 does not count as the end of the image.
        let mut with_thumb = jpeg[..2].to_vec();
        with_thumb.extend_from_slice(&[0xFF, 0xE1, 0x00, 0x08, b'E', b'x', 0xFF, 0xD9, 0, 0]);
        with_thumb.extend_from_slice(&jpeg[2..]);
        assert!(decode_rgb(&with_thumb, &limits()).is_ok());
        let half = with_thumb.len() / 2;
        assert!(decode_rgb(&with_thumb[..half], &limits()).is_err());

        let png = encode_png(64, 48, img.as_raw(), ExtendedColorType::Rgb8);
        for cut in [png.len() / 2, png.len() - 13] {
            let err = reason(decode_rgb(&png[..cut], &limits()).unwrap_err());
            assert!(err.contains("PNG"), "cut {cut}: {err}");
        }
    }

    #[test]
    fn cmyk_jpeg_matches_pillow() {
        // A 16×16 Adobe CMYK JPEG written by Pillow, see CMYK_JPEG_HEX's comment.
        let jpeg: Vec<u8> = (0..CMYK_JPEG_HEX.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&CMYK_JPEG_HEX[i..i + 2], 16).unwrap())
            .collect();
        let img = decode_rgb(&jpeg, &limits()).unwrap();
        assert_eq!(img.dimensions(), (16, 16));
        for (x, y, expected) in CMYK_EXPECTED {
            let got = img.get_pixel(x, y).0;
            let close = got
                .iter()
                .zip(expected)
                .all(|(&g, e)| (i32::from(g) - i32::from(e)).abs() <= 3);
            assert!(close, "({x},{y}): got {got:?}, Pillow {expected:?}");
        }
    }

    // Produced once with Pillow 13.0.0 (libjpeg-turbo 3) by:
    //   from PIL import Image
    //   im = Image.new("CMYK", (16, 16))
    //   for (x0, y0, c) in ((0, 0, (0, 255, 255, 0)), (8, 0, (255, 0, 0, 64)),
    //                       (0, 8, (0, 0, 0, 128)), (8, 8, (30, 90, 160, 20))):
    //       im.paste(c, (x0, y0, x0 + 8, y0 + 8))
    //   im.save("cmyk.jpg", quality=95)   # Pillow writes Adobe (inverted) CMYK
    //   rgb = Image.open("cmyk.jpg").convert("RGB")
    //   print([rgb.getpixel((x, y)) for (x, y) in ((4, 4), (12, 4), (4, 12), (12, 12))])
    const CMYK_JPEG_HEX: &str = concat!(
        "ffd8ffee000e41646f626500640000000000ffdb004300020101010101020101010202020202040302020202",
        "0504040304060506060605060606070908060709070606080b08090a0a0a0a0a06080b0c0b0a0c090a0a0aff",
        "c000140800100010044311004d11005911004b1100ffc4001f00000105010101010101000000000000000001",
        "02030405060708090a0bffc400b5100002010303020403050504040000017d01020300041105122131410613",
        "516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435363738393a",
        "434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a92939495",
        "969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3",
        "e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda000e0443004d0059004b00003f00fdfcafe7febf9ffafdfcaf",
        "e00ebfbfcafeff002bf3febfbfca28afcffaf07afc97afe5febf6c2bffd9",
    );
    const CMYK_EXPECTED: [(u32, u32, [u8; 3]); 4] = [
        (4, 4, [255, 0, 0]),
        (12, 4, [0, 191, 191]),
        (4, 12, [127, 127, 127]),
        (12, 12, [207, 152, 88]),
    ];
}
