//! Clips in envelopes: [`seal_clip`] and [`open_clip`], the one place a
//! [`ClipItem`] becomes an [`EnvelopeKind::Clip`] envelope and back.

use crate::content::{ClipItem, ClipMeta};
use crate::envelope::{Envelope, EnvelopeHeader, EnvelopeKind};
use crate::ids::DeviceId;
use crate::keys::ClipKey;
use thiserror::Error;
use zeroize::Zeroize;

/// Seals one clip as device `sender` with its sequence number `seq`.
pub fn seal_clip(key: &ClipKey, sender: DeviceId, seq: u64, item: &ClipItem) -> Vec<u8> {
    let mut plaintext = item.encode();
    let env = Envelope::seal(
        key,
        &EnvelopeHeader {
            kind: EnvelopeKind::Clip,
            sender,
            seq,
        },
        &plaintext,
    );
    plaintext.zeroize();
    env
}

/// Why a received clip envelope was dropped. Carries no detail on purpose.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum OpenClipError {
    /// Decryption failed, the header is not a clip, or the sender in the
    /// header is not the device the relay says sent it.
    #[error("could not open clip")]
    Open,
    /// It decrypted but is not a clip this build understands.
    #[error("could not decode clip")]
    Decode,
}

/// Opens an envelope that `from` is said to have sent into its ordering
/// metadata and item.
pub fn open_clip(
    key: &ClipKey,
    from: DeviceId,
    envelope: &[u8],
) -> Result<(ClipMeta, ClipItem), OpenClipError> {
    let (header, mut plaintext) = Envelope::open(key, envelope).map_err(|_| OpenClipError::Open)?;
    if header.kind != EnvelopeKind::Clip || header.sender != from {
        plaintext.zeroize();
        return Err(OpenClipError::Open);
    }
    let item = ClipItem::decode(&plaintext);
    plaintext.zeroize();
    let item = item.map_err(|_| OpenClipError::Decode)?;
    Ok((
        ClipMeta {
            origin: header.sender,
            seq: header.seq,
            timestamp_ms: item.timestamp_ms,
        },
        item,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::ClipContent;
    use crate::keys::DataKey;

    #[test]
    fn seal_open_roundtrip_and_sender_binding() {
        let key = DataKey::generate().clip_key();
        let item = ClipItem {
            timestamp_ms: 42,
            content: ClipContent::Text("hi".into()),
        };
        let env = seal_clip(&key, DeviceId(3), 7, &item);
        let (meta, back) = open_clip(&key, DeviceId(3), &env).unwrap();
        assert_eq!(back, item);
        assert_eq!(
            meta,
            ClipMeta {
                origin: DeviceId(3),
                seq: 7,
                timestamp_ms: 42
            }
        );
        // The relay claims another sender: refused.
        assert_eq!(
            open_clip(&key, DeviceId(4), &env).unwrap_err(),
            OpenClipError::Open
        );
        let other = DataKey::generate().clip_key();
        assert_eq!(
            open_clip(&other, DeviceId(3), &env).unwrap_err(),
            OpenClipError::Open
        );
        // A signal envelope is never a clip, even under the same key.
        let signal = Envelope::seal(
            &key,
            &EnvelopeHeader {
                kind: EnvelopeKind::Signal,
                sender: DeviceId(3),
                seq: 8,
            },
            &item.encode(),
        );
        assert_eq!(
            open_clip(&key, DeviceId(3), &signal).unwrap_err(),
            OpenClipError::Open
        );
    }
}
