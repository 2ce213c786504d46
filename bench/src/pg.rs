//! A database of its own on a PostgreSQL server for one benchmark run
//! (created with a unique name, dropped at the end), and the CPU its backend
//! processes use. Shared by `storebench` and the load generator's replica runs.

use std::collections::HashMap;

/// A database of its own on the PostgreSQL server, dropped by [`PgDatabase::drop_database`].
pub struct PgDatabase {
    admin: tokio_postgres::Client,
    name: String,
    /// `postgres://…/<the new database>` (with `options`, when given).
    pub url: String,
}

impl PgDatabase {
    /// Creates a database beside the one `admin_url` names; `options` (a URL
    /// query parameter such as `options=-c%20synchronous_commit%3Doff`) is
    /// added to the returned URL.
    pub async fn create(admin_url: &str, options: Option<&str>) -> Result<Self, String> {
        let config: tokio_postgres::Config = admin_url.parse().map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        let db = config
            .get_dbname()
            .ok_or("the PostgreSQL URL must name a database (…/test)")?
            .to_string();
        let (admin, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("PostgreSQL does not answer: {e}"))?;
        tokio::spawn(connection);
        let name = format!("va_bench_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| format!("CREATE DATABASE: {e}"))?;
        let mut url = admin_url.replacen(&format!("/{db}"), &format!("/{name}"), 1);
        if let Some(o) = options {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(o);
        }
        Ok(Self { admin, name, url })
    }

    /// Process ids of the backends connected to this database now.
    pub async fn backend_pids(&self) -> Vec<i32> {
        self.admin
            .query("SELECT pid FROM pg_stat_activity WHERE datname = $1", &[&self.name])
            .await
            .map(|rows| rows.iter().map(|r| r.get::<_, i32>(0)).collect())
            .unwrap_or_default()
    }

    /// Drops the database, closing what is still connected to it.
    pub async fn drop_database(self) {
        if let Err(e) = self
            .admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .await
        {
            eprintln!("warning: DROP DATABASE {}: {e}", self.name);
        }
    }
}

/// utime + stime of a process in seconds; `None` when it is not visible
/// from here (PostgreSQL on another machine, or the process ended).
pub fn cpu_seconds(pid: i64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux the project runs on.
    Some(ticks / 100.0)
}

/// CPU seconds of each of `pids` that is visible.
pub fn cpu_of(pids: &[i32]) -> HashMap<i32, f64> {
    pids.iter()
        .filter_map(|p| cpu_seconds(i64::from(*p)).map(|c| (*p, c)))
        .collect()
}

/// CPU seconds the processes visible in both samples used between them
/// (`None` when none was visible: PostgreSQL runs elsewhere).
pub fn cpu_between(before: &HashMap<i32, f64>, after: &HashMap<i32, f64>) -> Option<f64> {
    let pairs: Vec<f64> = after
        .iter()
        .filter_map(|(pid, c1)| before.get(pid).map(|c0| c1 - c0))
        .collect();
    (!pairs.is_empty()).then(|| pairs.iter().sum())
}
