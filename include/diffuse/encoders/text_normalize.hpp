#pragma once
// Text clean-up before CLIP's byte-level BPE (torch-free; Unicode through ICU).
//
// OpenAI's CLIP tokenizer (clip/simple_tokenizer.py) runs ftfy.fix_text, html.unescape twice,
// collapses whitespace (Python's \s), strips and lower-cases (Python's str.lower: full Unicode case
// mapping, final sigma included). The parts of ftfy's default fix_text that change ordinary
// prompts are reproduced here in its order: Latin ligatures (U+FB00..FB06, IJ, DZ...) and
// full-width forms (U+FF01..FFEF, U+3000: NFKC of those characters only), curly quotes
// (U+02BC, U+2018..201B -> ', U+201C..201F -> "), line breaks, control characters, then NFC
// (which joins a letter and a combining accent). ftfy's mojibake repair (text that was decoded
// with the wrong codec, e.g. "CafÃ©") is not reproduced: such text keeps its characters here.
// HTML entities: numeric ones and the common named ones (amp, lt, gt, quot, apos, nbsp...).
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/locid.h>
#include <unicode/utf8.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "diffuse/core/error.hpp"

namespace diffuse::encoders::text {

// Decodes UTF-8 into code points; invalid bytes become U+FFFD (as Python's 'replace' would).
inline std::u32string utf8_to_u32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  std::int32_t i = 0;
  const auto n = static_cast<std::int32_t>(s.size());
  while (i < n) {
    UChar32 c;
    U8_NEXT(reinterpret_cast<const std::uint8_t*>(s.data()), i, n, c);
    out.push_back(c < 0 ? 0xFFFD : static_cast<char32_t>(c));
  }
  return out;
}

inline void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

inline std::string u32_to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

// Python's str.isspace (what re's \s matches in a str pattern).
inline bool is_space(char32_t c) {
  if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F) || c == 0x85 || c == 0xA0) return true;
  if (c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
      c == 0x3000)
    return true;
  return false;
}

// \p{L} and \p{N} of the `regex` module: the Unicode general categories L* and N*.
inline bool is_letter(char32_t c) {
  const auto t = u_charType(static_cast<UChar32>(c));
  return t == U_UPPERCASE_LETTER || t == U_LOWERCASE_LETTER || t == U_TITLECASE_LETTER || t == U_MODIFIER_LETTER ||
         t == U_OTHER_LETTER;
}
inline bool is_number(char32_t c) {
  const auto t = u_charType(static_cast<UChar32>(c));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

namespace detail {

inline std::u32string icu_to_u32(const icu::UnicodeString& s) {
  std::u32string out;
  out.reserve(static_cast<std::size_t>(s.length()));
  for (std::int32_t i = 0; i < s.length();) {
    const UChar32 c = s.char32At(i);
    out.push_back(static_cast<char32_t>(c));
    i += U16_LENGTH(c);
  }
  return out;
}
inline icu::UnicodeString u32_to_icu(std::u32string_view s) {
  icu::UnicodeString out;
  for (char32_t c : s) out.append(static_cast<UChar32>(c));
  return out;
}

inline const icu::Normalizer2& normalizer(bool compat) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = compat ? icu::Normalizer2::getNFKCInstance(status) : icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status) || !n) throw Error(std::string("ICU normaliser unavailable: ") + u_errorName(status));
  return *n;
}

inline std::u32string normalize(std::u32string_view s, bool compat) {
  UErrorCode status = U_ZERO_ERROR;
  const auto out = normalizer(compat).normalize(u32_to_icu(s), status);
  if (U_FAILURE(status)) throw Error(std::string("ICU normalisation failed: ") + u_errorName(status));
  return icu_to_u32(out);
}

// ftfy's fix_latin_ligatures table: the ligature characters and what they stand for.
inline bool latin_ligature(char32_t c, std::u32string& out) {
  switch (c) {
    case 0x0132: out += U"IJ"; return true;
    case 0x0133: out += U"ij"; return true;
    case 0x0149: out += U"\u02BCn"; return true;
    case 0x01C4: out += U"D\u017D"; return true;
    case 0x01C5: out += U"D\u017E"; return true;
    case 0x01C6: out += U"d\u017E"; return true;
    case 0x01C7: out += U"LJ"; return true;
    case 0x01C8: out += U"Lj"; return true;
    case 0x01C9: out += U"lj"; return true;
    case 0x01CA: out += U"NJ"; return true;
    case 0x01CB: out += U"Nj"; return true;
    case 0x01CC: out += U"nj"; return true;
    case 0x01F1: out += U"DZ"; return true;
    case 0x01F2: out += U"Dz"; return true;
    case 0x01F3: out += U"dz"; return true;
    case 0xFB00: out += U"ff"; return true;
    case 0xFB01: out += U"fi"; return true;
    case 0xFB02: out += U"fl"; return true;
    case 0xFB03: out += U"ffi"; return true;
    case 0xFB04: out += U"ffl"; return true;
    case 0xFB05: out += U"\u017Ft"; return true;
    case 0xFB06: out += U"st"; return true;
    default: return false;
  }
}

// Characters ftfy's remove_control_chars deletes (tabs, newlines and the joiners stay).
inline bool removable_control(char32_t c) {
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC) || (c >= 0x1D173 && c <= 0x1D17A) ||
         (c >= 0xE0000 && c <= 0xE007F);
}

}  // namespace detail

// The subset of ftfy.fix_text described at the top of this file.
inline std::u32string fix_text(std::u32string_view in) {
  std::u32string a;
  a.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char32_t c = in[i];
    if (detail::latin_ligature(c, a)) continue;
    if ((c >= 0xFF01 && c <= 0xFFEF)) {  // full-width and half-width forms: NFKC of the character alone
      a += detail::normalize(std::u32string(1, c), true);
      continue;
    }
    if (c == 0x3000) { a.push_back(U' '); continue; }
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) { a.push_back(U'\''); continue; }
    if (c >= 0x201C && c <= 0x201F) { a.push_back(U'"'); continue; }
    if (c == U'\r') {  // \r\n and \r -> \n
      a.push_back(U'\n');
      if (i + 1 < in.size() && in[i + 1] == U'\n') ++i;
      continue;
    }
    if (c == 0x2028 || c == 0x2029 || c == 0x85) { a.push_back(U'\n'); continue; }
    if (detail::removable_control(c)) continue;
    a.push_back(c);
  }
  return detail::normalize(a, false);
}

// html.unescape for numeric references and the common named ones; anything else stays as written.
inline std::u32string html_unescape(std::u32string_view s) {
  static const std::pair<std::u32string_view, char32_t> named[] = {
      {U"amp", U'&'}, {U"lt", U'<'}, {U"gt", U'>'}, {U"quot", U'"'}, {U"apos", U'\''}, {U"nbsp", 0xA0},
      {U"copy", 0xA9}, {U"reg", 0xAE}, {U"trade", 0x2122}, {U"hellip", 0x2026}, {U"mdash", 0x2014},
      {U"ndash", 0x2013}, {U"lsquo", 0x2018}, {U"rsquo", 0x2019}, {U"ldquo", 0x201C}, {U"rdquo", 0x201D},
      {U"times", 0xD7}, {U"deg", 0xB0}, {U"eacute", 0xE9}};
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != U'&') { out.push_back(s[i]); continue; }
    const auto semi = s.find(U';', i + 1);
    if (semi != std::u32string_view::npos && semi - i <= 32) {
      const auto body = s.substr(i + 1, semi - i - 1);
      if (body.size() >= 2 && body[0] == U'#') {
        const bool hex = body[1] == U'x' || body[1] == U'X';
        std::uint32_t v = 0;
        bool ok = body.size() > (hex ? 2u : 1u);
        for (std::size_t k = hex ? 2 : 1; ok && k < body.size(); ++k) {
          const char32_t d = body[k];
          int digit = -1;
          if (d >= U'0' && d <= U'9') digit = static_cast<int>(d - U'0');
          else if (hex && d >= U'a' && d <= U'f') digit = static_cast<int>(d - U'a' + 10);
          else if (hex && d >= U'A' && d <= U'F') digit = static_cast<int>(d - U'A' + 10);
          if (digit < 0 || v > 0x10FFFF) ok = false;
          else v = v * (hex ? 16 : 10) + static_cast<std::uint32_t>(digit);
        }
        if (ok) {
          out.push_back(v == 0 || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF) ? char32_t{0xFFFD} : char32_t{v});
          i = semi;
          continue;
        }
      } else {
        bool found = false;
        for (const auto& [name, c] : named)
          if (body == name) {
            out.push_back(c);
            found = true;
            break;
          }
        if (found) {
          i = semi;
          continue;
        }
      }
    }
    out.push_back(U'&');
  }
  return out;
}

// re.sub(r'\s+', ' ', text).strip()
inline std::u32string collapse_whitespace(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  bool pending = false;
  for (char32_t c : s) {
    if (is_space(c)) {
      pending = !out.empty();
      continue;
    }
    if (pending) out.push_back(U' ');
    pending = false;
    out.push_back(c);
  }
  return out;
}

// Python's str.lower(): full case mapping of the root locale (final sigma included).
inline std::u32string lower(std::u32string_view s) {
  auto u = detail::u32_to_icu(s);
  u.toLower(icu::Locale::getRoot());
  return detail::icu_to_u32(u);
}

// What CLIP's tokenizer does before splitting: ftfy, html.unescape twice (OpenAI's tokenizer; the
// Hugging Face one skips it), whitespace collapse, strip, lower-case.
inline std::u32string clip_clean(std::string_view utf8, bool unescape_html = true) {
  auto t = fix_text(utf8_to_u32(utf8));
  if (unescape_html) t = html_unescape(html_unescape(t));
  return lower(collapse_whitespace(t));
}

}  // namespace diffuse::encoders::text
