//! A small document model rendered twice: `report.md` (figures as PNG links) and a
//! self-contained `report.html` (figures inlined as SVG, no external files or scripts).
//!
//! Paragraph text may use `**bold**` and `` `code` ``; everything else is plain text.

use crate::error::{io, Result};
use crate::plot::Figure;
use std::path::Path;

/// One block of a report.
#[derive(Clone, Debug)]
pub enum Block {
    /// heading of a level (2 = section, 3 = subsection)
    Heading(u8, String),
    /// a paragraph
    Para(String),
    /// a bullet list
    Bullets(Vec<String>),
    /// a table: header and rows
    Table(Vec<String>, Vec<Vec<String>>),
    /// a chart (PNG + SVG)
    Figure(Figure),
}

/// A report: a title and blocks.
#[derive(Clone, Debug, Default)]
pub struct Doc {
    /// the `#` title
    pub title: String,
    /// the content
    pub blocks: Vec<Block>,
}

impl Doc {
    /// An empty report.
    pub fn new(title: &str) -> Self {
        Doc { title: title.to_string(), blocks: Vec::new() }
    }
    /// Add a section heading.
    pub fn h2(&mut self, s: &str) {
        self.blocks.push(Block::Heading(2, s.to_string()));
    }
    /// Add a subsection heading.
    pub fn h3(&mut self, s: &str) {
        self.blocks.push(Block::Heading(3, s.to_string()));
    }
    /// Add a paragraph.
    pub fn p(&mut self, s: impl Into<String>) {
        self.blocks.push(Block::Para(s.into()));
    }
    /// Add a bullet list.
    pub fn bullets(&mut self, items: Vec<String>) {
        if !items.is_empty() {
            self.blocks.push(Block::Bullets(items));
        }
    }
    /// Add a table.
    pub fn table(&mut self, head: &[&str], rows: Vec<Vec<String>>) {
        self.blocks.push(Block::Table(head.iter().map(|s| s.to_string()).collect(), rows));
    }
    /// Add a figure.
    pub fn figure(&mut self, f: &Figure) {
        self.blocks.push(Block::Figure(f.clone()));
    }

    /// Markdown; figure paths are made relative to `base` (the report's directory).
    pub fn to_markdown(&self, base: &Path) -> String {
        let mut s = format!("# {}\n\n", self.title);
        for b in &self.blocks {
            match b {
                Block::Heading(l, t) => s.push_str(&format!("{} {t}\n\n", "#".repeat(*l as usize))),
                Block::Para(t) => s.push_str(&format!("{t}\n\n")),
                Block::Bullets(items) => {
                    for i in items {
                        s.push_str(&format!("- {i}\n"));
                    }
                    s.push('\n');
                }
                Block::Table(head, rows) => {
                    let cell = |c: &str| c.replace('|', "\\|");
                    s.push_str(&format!("| {} |\n", head.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | ")));
                    s.push_str(&format!("|{}\n", "---|".repeat(head.len())));
                    for r in rows {
                        s.push_str(&format!("| {} |\n", r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")));
                    }
                    s.push('\n');
                }
                Block::Figure(f) => {
                    let png = rel(&f.png, base);
                    let svg = rel(&f.svg, base);
                    s.push_str(&format!("![{}]({png})\n\n*{}* ([SVG]({svg}))\n\n", f.title, f.title));
                }
            }
        }
        s
    }

    /// Self-contained HTML with every figure's SVG inlined.
    pub fn to_html(&self) -> Result<String> {
        let mut s = String::from("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        s.push_str(&format!(
            "<title>{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
            esc(&self.title),
            esc(&self.title)
        ));
        for b in &self.blocks {
            match b {
                Block::Heading(l, t) => s.push_str(&format!("<h{l}>{}</h{l}>\n", inline(t))),
                Block::Para(t) => s.push_str(&format!("<p>{}</p>\n", inline(t))),
                Block::Bullets(items) => {
                    s.push_str("<ul>\n");
                    for i in items {
                        s.push_str(&format!("<li>{}</li>\n", inline(i)));
                    }
                    s.push_str("</ul>\n");
                }
                Block::Table(head, rows) => {
                    s.push_str("<table>\n<tr>");
                    for h in head {
                        s.push_str(&format!("<th>{}</th>", inline(h)));
                    }
                    s.push_str("</tr>\n");
                    for r in rows {
                        s.push_str("<tr>");
                        for c in r {
                            s.push_str(&format!("<td>{}</td>", inline(c)));
                        }
                        s.push_str("</tr>\n");
                    }
                    s.push_str("</table>\n");
                }
                Block::Figure(f) => {
                    let svg = std::fs::read_to_string(&f.svg).map_err(io(&f.svg, "cannot read figure"))?;
                    let start = svg.find("<svg").unwrap_or(0);
                    s.push_str(&format!("<figure>\n{}\n<figcaption>{}</figcaption>\n</figure>\n", &svg[start..], esc(&f.title)));
                }
            }
        }
        s.push_str("</body>\n</html>\n");
        Ok(s)
    }
}

const CSS: &str = "body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}
figure{margin:1.5em 0}
figure svg{max-width:100%;height:auto}
figcaption{font-style:italic;color:#555}
code{background:#f4f4f4;padding:0 3px}
";

fn rel(p: &Path, base: &Path) -> String {
    p.strip_prefix(base).unwrap_or(p).to_string_lossy().replace('\\', "/")
}

/// HTML-escape text.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Escape and turn `**x**` into `<strong>` and `` `x` `` into `<code>`.
fn inline(s: &str) -> String {
    let e = esc(s);
    let mut out = String::with_capacity(e.len());
    let (mut bold, mut code) = (false, false);
    let mut it = e.chars().peekable();
    while let Some(c) = it.next() {
        if c == '*' && it.peek() == Some(&'*') && !code {
            it.next();
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
        } else if c == '`' {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
        } else {
            out.push(c);
        }
    }
    if bold {
        out.push_str("</strong>");
    }
    if code {
        out.push_str("</code>");
    }
    out
}

/// Write `report.md` and `report.html` of `doc` into `dir`; returns their paths.
pub fn write_reports(doc: &Doc, dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let md = dir.join("report.md");
    let html = dir.join("report.html");
    moe_model::checkpoint::write_atomic(&md, doc.to_markdown(dir).as_bytes())?;
    moe_model::checkpoint::write_atomic(&html, doc.to_html()?.as_bytes())?;
    Ok((md, html))
}

/// Write `value` as pretty JSON to `path` atomically.
pub fn write_json<T: serde::Serialize>(value: &T, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| crate::error::Error::Json {
        path: path.to_path_buf(),
        line: 0,
        message: e.to_string(),
    })?;
    Ok(moe_model::checkpoint::write_atomic(path, text.as_bytes())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_renders_markdown_and_html() {
        let tmp = tempfile::tempdir().unwrap();
        let svg = tmp.path().join("plots/a.svg");
        std::fs::create_dir_all(svg.parent().unwrap()).unwrap();
        std::fs::write(&svg, "<?xml version=\"1.0\"?>\n<svg width=\"10\"></svg>").unwrap();
        let mut d = Doc::new("T");
        d.h2("Verdict");
        d.p("**MoE** wins <by> `x`");
        d.table(&["a", "b|c"], vec![vec!["1".into(), "2".into()]]);
        d.figure(&Figure { title: "fig".into(), png: tmp.path().join("plots/a.png"), svg: svg.clone() });
        let md = d.to_markdown(tmp.path());
        assert!(md.contains("## Verdict") && md.contains("| a | b\\|c |") && md.contains("![fig](plots/a.png)"), "{md}");
        let html = d.to_html().unwrap();
        assert!(html.contains("<strong>MoE</strong> wins &lt;by&gt; <code>x</code>"), "{html}");
        assert!(html.contains("<svg width=\"10\"></svg>") && !html.contains("<?xml"));
        let (m, h) = write_reports(&d, tmp.path()).unwrap();
        assert!(m.is_file() && h.is_file());
    }
}
