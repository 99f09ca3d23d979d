//! The store conformance suite, on both backends.

mod postgres {
    martix_engine::store_conformance!(martix_tests::postgres_store);
}

mod sqlite {
    martix_engine::store_conformance!(martix_tests::sqlite_store);
}
