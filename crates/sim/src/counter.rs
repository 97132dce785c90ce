//! The counter workload's check: sequential znodes under one parent make a fetch-and-increment
//! counter (each create returns the parent's next sequence number). Such a counter is
//! linearizable when no number is handed out twice and numbers respect real time: an increment
//! that finished before another began got the smaller number.

/// One acknowledged increment: when it was invoked and answered (simulated ns), what it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Increment {
    pub invoked: u64,
    pub answered: u64,
    pub value: u64,
}

/// The first violation in `history`, if any. Increments whose outcome is unknown are left out:
/// each may or may not have taken a number, and neither breaks the rules above.
pub fn check(history: &[Increment]) -> Result<(), String> {
    let mut by_value = history.to_vec();
    by_value.sort_by_key(|i| i.value);
    if let Some(w) = by_value.windows(2).find(|w| w[0].value == w[1].value) {
        return Err(format!("number {} handed out twice: {w:?}", w[0].value));
    }
    // For each increment in order of invocation, the largest number among those answered
    // before it began must be smaller than its own.
    let mut by_answer = history.to_vec();
    by_answer.sort_by_key(|i| i.answered);
    let mut by_invocation = history.to_vec();
    by_invocation.sort_by_key(|i| i.invoked);
    let mut done = 0;
    let mut largest: Option<Increment> = None;
    for b in by_invocation {
        while done < by_answer.len() && by_answer[done].answered < b.invoked {
            let a = by_answer[done];
            if largest.is_none_or(|l| a.value > l.value) {
                largest = Some(a);
            }
            done += 1;
        }
        if let Some(a) = largest.filter(|a| a.value > b.value) {
            return Err(format!(
                "number {} was handed out after {} had been: {a:?} finished before {b:?} began",
                b.value, a.value
            ));
        }
    }
    Ok(())
}

/// The sequence number at the end of a sequential znode's name (`n-0000000012`).
pub fn number_of(path: &str) -> Option<u64> {
    let digits = path.get(path.len().checked_sub(10)?..)?;
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(invoked: u64, answered: u64, value: u64) -> Increment {
        Increment {
            invoked,
            answered,
            value,
        }
    }

    #[test]
    fn overlapping_increments_may_take_numbers_in_either_order() {
        assert_eq!(
            check(&[inc(0, 10, 2), inc(5, 8, 1), inc(11, 12, 3)]),
            Ok(())
        );
    }

    #[test]
    fn a_number_handed_out_twice_fails() {
        assert!(check(&[inc(0, 1, 4), inc(2, 3, 4)]).is_err());
    }

    #[test]
    fn a_later_increment_with_a_smaller_number_fails() {
        let err = check(&[inc(0, 1, 7), inc(2, 3, 5)]).unwrap_err();
        assert!(err.contains("number 5 was handed out after 7"), "{err}");
    }

    #[test]
    fn sequence_numbers_parse_from_names() {
        assert_eq!(number_of("/ctr/n-0000000012"), Some(12));
        assert_eq!(number_of("/ctr/n-"), None);
    }
}
