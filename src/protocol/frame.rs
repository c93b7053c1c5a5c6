//! Request framing: a 4-byte big-endian size, then a request header whose
//! version depends on the API key and version, then the body.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame size {0} is negative")]
    NegativeSize(i32),
    #[error("frame size {size} exceeds the maximum of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("malformed request header for {api:?} v{version}: {source}")]
    BadHeader {
        api: ApiKey,
        version: i16,
        source: anyhow::Error,
    },
    #[error("cannot encode response: {0}")]
    Encode(anyhow::Error),
}

/// Checks a frame size prefix against the configured maximum.
pub fn check_frame_size(size: i32, max: usize) -> Result<usize, FrameError> {
    if size < 0 {
        return Err(FrameError::NegativeSize(size));
    }
    let size = size as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    Ok(size)
}

/// A request whose header has been parsed; `body` holds the rest.
#[derive(Debug)]
pub struct RequestFrame {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// Reads the API key and version (the first four bytes), then decodes the
/// header with the header version that pair implies. For an API version that
/// `kafka-protocol` does not know, the header is decoded with the version-0/1
/// layout, which every Kafka API shares for its fixed part.
pub fn decode_request_header(mut frame: Bytes) -> Result<RequestFrame, FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::TooShort(frame.len()));
    }
    let raw_key = (&frame[0..2]).get_i16();
    let api_version = (&frame[2..4]).get_i16();
    let api_key = ApiKey::try_from(raw_key).map_err(|_| FrameError::UnknownApiKey(raw_key))?;
    let known = api_key.valid_versions();
    let header_version = if (known.min..=known.max).contains(&api_version) {
        api_key.request_header_version(api_version)
    } else {
        1
    };
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|source| {
        FrameError::BadHeader {
            api: api_key,
            version: api_version,
            source,
        }
    })?;
    Ok(RequestFrame {
        api_key,
        api_version,
        header,
        body: frame,
    })
}

/// Encodes a full response frame (size prefix, header, body).
pub fn encode_response<M: Encodable + HeaderVersion>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &M,
) -> Result<Bytes, FrameError> {
    // ApiVersions always answers with header v0 so that a client that sent a
    // version we do not know can still read the error.
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(api_version)
    };
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    header
        .encode(&mut buf, header_version)
        .map_err(FrameError::Encode)?;
    body.encode(&mut buf, api_version)
        .map_err(FrameError::Encode)?;
    let size = i32::try_from(buf.len() - 4).map_err(|_| {
        FrameError::Encode(anyhow::anyhow!(
            "response of {} bytes is too large",
            buf.len()
        ))
    })?;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_size_limits() {
        assert!(matches!(
            check_frame_size(-1, 100),
            Err(FrameError::NegativeSize(-1))
        ));
        assert!(matches!(
            check_frame_size(101, 100),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(check_frame_size(100, 100).expect("fits"), 100);
    }

    #[test]
    fn header_errors_do_not_panic() {
        assert!(matches!(
            decode_request_header(Bytes::from_static(&[0, 3])),
            Err(FrameError::TooShort(2))
        ));
        assert!(matches!(
            decode_request_header(Bytes::from_static(&[0x7f, 0, 0, 0, 0, 0, 0, 1])),
            Err(FrameError::UnknownApiKey(0x7f00))
        ));
        // Metadata v12 header with a client id whose length runs past the end.
        let frame = Bytes::from_static(&[0, 3, 0, 12, 0, 0, 0, 1, 0x7f, 0x7f, b'a']);
        assert!(matches!(
            decode_request_header(frame),
            Err(FrameError::BadHeader { .. })
        ));
    }
}
