//! Times printed as ZooKeeper's Java code prints them.

/// A time as Java's `Date.toString` prints it in UTC: `Wed Nov 25 02:35:13 UTC 2026`.
pub fn java_date(epoch_ms: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = epoch_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let in_day = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {day:02} {:02}:{:02}:{:02} UTC {year}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_print_like_java() {
        assert_eq!(super::java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
        // 2026-11-25T02:35:13Z, as the real ZooKeeper printed it.
        assert_eq!(
            super::java_date(1_795_574_113_000),
            "Wed Nov 25 02:35:13 UTC 2026"
        );
        assert_eq!(
            super::java_date(951_782_400_000),
            "Tue Feb 29 00:00:00 UTC 2000"
        );
    }
}
