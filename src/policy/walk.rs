//! The parse tree walked through its `serde::Serialize` implementation: every field and
//! enum variant of every node is visited (generically, so no node kind can be skipped by an
//! incomplete traversal) without building a copy of the tree. A JSON tree of a long text
//! took about six times the memory of the parse itself.

use std::fmt;

use serde::ser::{self, Serialize};

/// What a walk reports: each field or variant name as it is entered (`key`, with the names
/// entered on the way to it, outermost first) and left, each scalar under the innermost
/// name, and each `RawStmt` (one statement) as it starts and ends.
pub(crate) trait Visit {
    fn enter(&mut self, path: &[&'static str]);
    fn leave(&mut self, path: &[&'static str]);
    fn text(&mut self, path: &[&'static str], value: &str);
    fn int(&mut self, path: &[&'static str], value: i64);
    fn flag(&mut self, path: &[&'static str], value: bool);
    fn statement(&mut self, start: bool);
}

/// Walks `tree`, reporting to `visit`.
pub(crate) fn walk<T: Serialize, V: Visit>(tree: &T, visit: &mut V) -> Result<(), Never> {
    tree.serialize(&mut Walker { visit, path: Vec::new(), structs: Vec::new() })
}

struct Walker<'v, V> {
    visit: &'v mut V,
    path: Vec<&'static str>,
    structs: Vec<&'static str>,
}

impl<V: Visit> Walker<'_, V> {
    fn named<T: Serialize + ?Sized>(&mut self, name: &'static str, value: &T) -> Result<(), Never> {
        self.path.push(name);
        self.visit.enter(&self.path);
        value.serialize(&mut *self)?;
        self.visit.leave(&self.path);
        self.path.pop();
        Ok(())
    }
}

/// The walk cannot fail; serde wants an error type all the same.
#[derive(Debug)]
pub(crate) struct Never;

impl fmt::Display for Never {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the parse tree could not be walked")
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Never
    }
}

macro_rules! ints {
    ($($method:ident: $t:ty),*) => {$(
        fn $method(self, v: $t) -> Result<(), Never> {
            self.visit.int(&self.path, i64::from(v));
            Ok(())
        }
    )*};
}

macro_rules! ignored {
    ($($method:ident: $t:ty),*) => {$(
        fn $method(self, _: $t) -> Result<(), Never> {
            Ok(())
        }
    )*};
}

impl<V: Visit> ser::Serializer for &mut Walker<'_, V> {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    ints!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_u8: u8, serialize_u16: u16,
          serialize_u32: u32);

    fn serialize_i64(self, v: i64) -> Result<(), Never> {
        self.visit.int(&self.path, v);
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Result<(), Never> {
        self.visit.int(&self.path, i64::try_from(v).unwrap_or(i64::MAX));
        Ok(())
    }
    ignored!(serialize_f32: f32, serialize_f64: f64, serialize_bytes: &[u8], serialize_unit_struct: &'static str);

    fn serialize_bool(self, v: bool) -> Result<(), Never> {
        self.visit.flag(&self.path, v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Never> {
        self.visit.text(&self.path, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Never> {
        self.visit.text(&self.path, v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Never> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Never> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<(), Never> {
        self.named(variant, &())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<(), Never> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        self.named(variant, value)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, variant: &'static str, _: usize) -> Result<Self, Never> {
        self.path.push(variant);
        self.visit.enter(&self.path);
        self.structs.push(variant);
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self, Never> {
        if name == "RawStmt" {
            self.visit.statement(true);
        }
        self.structs.push(name);
        Ok(self)
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, variant: &'static str, _: usize) -> Result<Self, Never> {
        self.path.push(variant);
        self.visit.enter(&self.path);
        self.structs.push(variant);
        Ok(self)
    }
}

impl<V: Visit> Walker<'_, V> {
    /// End of a struct (or of a variant with fields, which also leaves its name).
    fn end_struct(&mut self, variant: bool) {
        let name = self.structs.pop();
        if variant {
            self.visit.leave(&self.path);
            self.path.pop();
        } else if name == Some("RawStmt") {
            self.visit.statement(false);
        }
    }
}

impl<V: Visit> ser::SerializeSeq for &mut Walker<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Never> {
        Ok(())
    }
}

impl<V: Visit> ser::SerializeTuple for &mut Walker<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Never> {
        Ok(())
    }
}

impl<V: Visit> ser::SerializeTupleStruct for &mut Walker<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Never> {
        Ok(())
    }
}

impl<V: Visit> ser::SerializeTupleVariant for &mut Walker<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Never> {
        self.end_struct(true);
        Ok(())
    }
}

impl<V: Visit> ser::SerializeMap for &mut Walker<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Never> {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Never> {
        Ok(())
    }
}

impl<V: Visit> ser::SerializeStruct for &mut Walker<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Never> {
        self.named(key, value)
    }
    fn end(self) -> Result<(), Never> {
        self.end_struct(false);
        Ok(())
    }
}

impl<V: Visit> ser::SerializeStructVariant for &mut Walker<'_, V> {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), Never> {
        self.named(key, value)
    }
    fn end(self) -> Result<(), Never> {
        self.end_struct(true);
        Ok(())
    }
}
