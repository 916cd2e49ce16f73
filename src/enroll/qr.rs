//! A QR code as terminal text: two module rows per line with the Unicode
//! half blocks (`▀ ▄ █` and space), a four-module quiet zone. Dark modules
//! are the foreground: on a terminal, [`render`] with `ansi` pins black on
//! white so the code scans whatever the terminal's own colours are.

use qrcode::{Color, EcLevel, QrCode};

/// Modules of light margin around the code (the standard's quiet zone).
pub const QUIET: usize = 4;

/// Why a text could not become a QR code (far too long for one).
#[derive(Debug, thiserror::Error)]
#[error("cannot make a QR code: {0}")]
pub struct QrError(String);

/// The code's modules with the quiet zone, row by row (`true`: dark).
pub fn modules(text: &str) -> Result<Vec<Vec<bool>>, QrError> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| QrError(e.to_string()))?;
    let w = code.width();
    let colors = code.to_colors();
    let size = w + 2 * QUIET;
    let mut rows = vec![vec![false; size]; size];
    for (i, c) in colors.iter().enumerate() {
        rows[QUIET + i / w][QUIET + i % w] = *c == Color::Dark;
    }
    Ok(rows)
}

/// `text` as a QR code in half blocks, one `\n`-terminated line per two
/// module rows; with `ansi`, each line is wrapped in black-on-white colours.
pub fn render(text: &str, ansi: bool) -> Result<String, QrError> {
    let rows = modules(text)?;
    let mut out = String::new();
    for pair in rows.chunks(2) {
        if ansi {
            out.push_str("\x1b[30;47m");
        }
        for x in 0..pair[0].len() {
            let top = pair[0][x];
            let bottom = pair.get(1).is_some_and(|r| r[x]);
            out.push(match (top, bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        if ansi {
            out.push_str("\x1b[0m");
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read the half blocks back into module rows.
    fn parse(text: &str) -> Vec<Vec<bool>> {
        let mut rows = Vec::new();
        for line in text.lines() {
            let (mut top, mut bottom) = (Vec::new(), Vec::new());
            for c in line.chars() {
                top.push(matches!(c, '█' | '▀'));
                bottom.push(matches!(c, '█' | '▄'));
            }
            rows.push(top);
            rows.push(bottom);
        }
        rows
    }

    #[test]
    fn half_blocks_carry_every_module() {
        let url = "https://192.168.1.20:8443/pair#ABCDE-FGHJK";
        let m = modules(url).unwrap();
        let text = render(url, false).unwrap();
        let back = parse(&text);
        assert_eq!(&back[..m.len()], &m[..]);
        // An odd number of rows: the last line's bottom half is light.
        assert_eq!(m.len() % 2, 1);
        assert!(back[m.len()..].iter().flatten().all(|d| !d));
        // The quiet zone is light all round; the finder pattern's corner is dark.
        assert!(m[0].iter().all(|d| !d) && m.iter().all(|r| !r[0]));
        assert!(m[QUIET][QUIET]);
        let coloured = render(url, true).unwrap();
        assert!(coloured
            .lines()
            .all(|l| l.starts_with("\x1b[30;47m") && l.ends_with("\x1b[0m")));
    }
}
