//! How the status enums of [`crate::domain`] are written to and read from
//! SQLite: as the strings of architecture.md §4, so stored data is what it
//! always was. A row holding any other string fails to decode with an error
//! naming it, rather than being guessed at.

use sqlx::{
    encode::IsNull,
    error::BoxDynError,
    sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef},
    Decode, Encode, Sqlite, Type,
};

use crate::domain::{BatchStatus, DeliveryStatus};

macro_rules! stored_as_text {
    ($status:ty) => {
        impl Type<Sqlite> for $status {
            fn type_info() -> SqliteTypeInfo {
                <str as Type<Sqlite>>::type_info()
            }
        }

        impl Encode<'_, Sqlite> for $status {
            fn encode_by_ref(
                &self,
                buffer: &mut SqliteArgumentsBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Sqlite>>::encode(self.as_str(), buffer)
            }
        }

        impl<'r> Decode<'r, Sqlite> for $status {
            fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(<&str as Decode<Sqlite>>::decode(value)?.parse()?)
            }
        }
    };
}

stored_as_text!(BatchStatus);
stored_as_text!(DeliveryStatus);

/// The same strings in PostgreSQL (`TEXT` columns).
macro_rules! stored_as_pg_text {
    ($status:ty) => {
        impl Type<sqlx::Postgres> for $status {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <str as Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <str as Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl Encode<'_, sqlx::Postgres> for $status {
            fn encode_by_ref(
                &self,
                buffer: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <&str as Encode<sqlx::Postgres>>::encode(self.as_str(), buffer)
            }
        }

        impl<'r> Decode<'r, sqlx::Postgres> for $status {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(<&str as Decode<sqlx::Postgres>>::decode(value)?.parse()?)
            }
        }
    };
}

stored_as_pg_text!(BatchStatus);
stored_as_pg_text!(DeliveryStatus);
