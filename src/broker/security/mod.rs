//! Who is on a connection: TLS (with client certificates) on SSL
//! listeners, SASL (SCRAM, PLAIN) on SASL listeners, and the principal each
//! connection acts as.

pub mod principal;
pub mod sasl;
pub mod scram;
pub mod tls;
