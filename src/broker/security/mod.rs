//! Who is on a connection: TLS (with client certificates) on SSL
//! listeners, SASL (SCRAM, PLAIN) on SASL listeners, the principal each
//! connection acts as, and what ACLs let it do.

pub mod acl;
pub mod principal;
pub mod sasl;
pub mod scram;
pub mod tls;
