//! Spam or ham: emails parsed as email (headers, MIME parts, transfer encodings, charsets, by
//! `mail-parser`), turned into tokens, and scored by a multinomial naive Bayes model.

use crate::corpus::Label;
use std::collections::HashMap;

/// The words of an email: subject words and sender domain tagged, then the words of every text
/// part (HTML parts as text, tags dropped).
pub fn tokens(raw: &[u8]) -> Vec<String> {
    let Some(msg) = mail_parser::MessageParser::default().parse(raw) else {
        // Not parseable as a message: its bytes still say something.
        return words(&String::from_utf8_lossy(raw), "");
    };
    let mut out = Vec::new();
    if let Some(subject) = msg.subject() {
        out.extend(words(subject, "s:"));
    }
    if let Some(from) = msg.from().and_then(|f| f.first()).and_then(|a| a.address()) {
        if let Some((_, domain)) = from.rsplit_once('@') {
            out.push(format!("f:{}", domain.to_lowercase()));
        }
    }
    for i in 0..msg.text_body_count() {
        if let Some(text) = msg.body_text(i) {
            out.extend(words(&text, ""));
        }
    }
    if msg.text_body_count() == 0 {
        for i in 0..msg.html_body_count() {
            if let Some(html) = msg.body_html(i) {
                out.extend(words(&strip_tags(&html), ""));
            }
        }
    }
    out.push(format!("parts:{}", msg.parts.len().min(5)));
    out
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Lower-cased runs of letters, digits and `$!'`, 2 to 24 characters long.
fn words(text: &str, prefix: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || matches!(c, '$' | '!' | '\'')))
        .filter(|w| (2..=24).contains(&w.chars().count()))
        .map(|w| format!("{prefix}{}", w.to_lowercase()))
        .collect()
}

/// A multinomial naive Bayes model with Laplace smoothing.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Model {
    /// Emails of each class seen in training: [spam, ham].
    docs: [u64; 2],
    /// Token occurrences per class: [spam, ham].
    totals: [u64; 2],
    counts: HashMap<String, [u32; 2]>,
}

fn class(l: Label) -> usize {
    match l {
        Label::Spam => 0,
        Label::Ham => 1,
    }
}

impl Model {
    pub fn learn(&mut self, tokens: &[String], label: Label) {
        let c = class(label);
        self.docs[c] += 1;
        for t in tokens {
            self.counts.entry(t.clone()).or_default()[c] += 1;
            self.totals[c] += 1;
        }
    }

    /// Tokens seen fewer than `min` times in all are dropped (noise, and a smaller model).
    pub fn prune(&mut self, min: u32) {
        let mut totals = [0u64; 2];
        self.counts.retain(|_, n| {
            let keep = n[0] + n[1] >= min;
            if keep {
                totals[0] += u64::from(n[0]);
                totals[1] += u64::from(n[1]);
            }
            keep
        });
        self.totals = totals;
    }

    pub fn predict(&self, tokens: &[String]) -> Label {
        let vocab = self.counts.len() as f64 + 1.0;
        let docs = (self.docs[0] + self.docs[1]).max(1) as f64;
        let mut score = [0f64; 2];
        for (c, s) in score.iter_mut().enumerate() {
            *s = ((self.docs[c] as f64 + 1.0) / (docs + 2.0)).ln();
            let denom = self.totals[c] as f64 + vocab;
            for t in tokens {
                if let Some(n) = self.counts.get(t) {
                    *s += ((f64::from(n[c]) + 1.0) / denom).ln();
                }
            }
        }
        if score[0] > score[1] {
            Label::Spam
        } else {
            Label::Ham
        }
    }

    pub fn vocabulary(&self) -> usize {
        self.counts.len()
    }
}

/// Accuracy, and precision, recall and F1 for spam.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Scores {
    pub total: usize,
    pub correct: usize,
    pub true_spam: usize,
    pub false_spam: usize,
    pub missed_spam: usize,
}

impl Scores {
    pub fn add(&mut self, truth: Label, predicted: Label) {
        self.total += 1;
        match (truth, predicted) {
            (Label::Spam, Label::Spam) => self.true_spam += 1,
            (Label::Ham, Label::Spam) => self.false_spam += 1,
            (Label::Spam, Label::Ham) => self.missed_spam += 1,
            (Label::Ham, Label::Ham) => {}
        }
        if truth == predicted {
            self.correct += 1;
        }
    }

    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.total.max(1) as f64
    }

    pub fn precision(&self) -> f64 {
        self.true_spam as f64 / (self.true_spam + self.false_spam).max(1) as f64
    }

    pub fn recall(&self) -> f64 {
        self.true_spam as f64 / (self.true_spam + self.missed_spam).max(1) as f64
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    pub fn report(&self) -> String {
        format!(
            "accuracy {:.2}% ({}/{}), spam precision {:.3}, recall {:.3}, F1 {:.3}",
            100.0 * self.accuracy(),
            self.correct,
            self.total,
            self.precision(),
            self.recall(),
            self.f1()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_headers_and_decoded_parts() {
        let raw = b"From: Deals <win@cheap-pills.biz>\r\nSubject: FREE money now\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\nClick=20here to claim $1000!\r\n";
        let t = tokens(raw);
        assert!(t.contains(&"s:free".to_string()), "{t:?}");
        assert!(t.contains(&"f:cheap-pills.biz".to_string()), "{t:?}");
        assert!(
            t.contains(&"click".to_string()) && t.contains(&"here".to_string()),
            "{t:?}"
        );
        assert!(t.contains(&"$1000!".to_string()), "{t:?}");
    }

    #[test]
    fn the_model_separates_obvious_classes() {
        let mut m = Model::default();
        let w = |s: &str| words(s, "");
        m.learn(&w("cheap pills buy now winner"), Label::Spam);
        m.learn(&w("winner cash prize buy"), Label::Spam);
        m.learn(&w("meeting notes for the project"), Label::Ham);
        m.learn(&w("the build failed on the project"), Label::Ham);
        assert_eq!(m.predict(&w("buy cheap now")), Label::Spam);
        assert_eq!(m.predict(&w("project meeting")), Label::Ham);
    }

    #[test]
    fn scores() {
        let mut s = Scores::default();
        s.add(Label::Spam, Label::Spam);
        s.add(Label::Ham, Label::Spam);
        s.add(Label::Spam, Label::Ham);
        s.add(Label::Ham, Label::Ham);
        assert_eq!(s.accuracy(), 0.5);
        assert_eq!(s.precision(), 0.5);
        assert_eq!(s.recall(), 0.5);
    }
}
