#!/usr/bin/env python3
"""Assembles tests/data/corpus.txt: mixed, deterministic text for comparing thaw's
token ids with llama.cpp's. Run once; the output is committed (sources are files found
on a Debian machine with Python 3.11 and a cargo registry, plus hand-written lines)."""
import glob, json, os, random

rng = random.Random(20261122)
out = []

def take(path, start, n, keep_blank=False):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
    except OSError:
        return []
    got = [l for l in lines[start:start + n] if keep_blank or l.strip()]
    return got

# Licenses (English legal prose, punctuation, numbering).
for name in ["GPL-3", "Apache-2.0", "MPL-2.0", "Artistic", "BSD", "LGPL-2.1"]:
    out += take(f"/usr/share/common-licenses/{name}", 0, 130)
# Python source (indentation, operators, strings).
for mod in ["json/encoder.py", "textwrap.py", "heapq.py", "fractions.py", "shlex.py"]:
    out += take(f"/usr/lib/python3.11/{mod}", 40, 120, keep_blank=False)
# C headers.
out += take("/usr/include/stdio.h", 20, 140)
# Shell.
out += take("/etc/bash.bashrc", 0, 60) + take("/etc/profile", 0, 40)
# Rust source.
reg = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/tokenizers-0.22.2/src/models/bpe/")))
if reg:
    out += take(reg[0] + "model.rs", 0, 160) + take(reg[0] + "word.rs", 0, 100)

# JSON documents, compact and pretty.
docs = [
    {"name": "thaw", "version": "0.1.0", "tags": ["llm", "gguf"], "ok": True, "n": 12345678901234},
    {"user": {"id": 42, "email": "ana.garcía@example.com", "roles": ["admin", "ops"]}, "score": -0.000123},
    {"items": [{"sku": "A-001", "qty": 3, "price": 19.99}, {"sku": "B-002", "qty": 10, "price": 0.5}]},
    {"emoji": "😀👍🏽", "cjk": "东京", "escape": "tab\there", "null": None},
]
for d in docs:
    out.append(json.dumps(d))
    out.append(json.dumps(d, ensure_ascii=False))
    out += json.dumps(d, indent=2, ensure_ascii=False).split("\n")

multilingual = """Le cœur a ses raisons que la raison ne connaît point.
¿Dónde está la biblioteca? Está cerca de la estación, señora.
Größere Häuser kosten mehr — über 500.000 € in München.
Ångström, smörgåsbord och räksmörgås är svenska ord.
Ação, coração, pão e feijão são palavras portuguesas.
Zażółć gęślą jaźń — polski pangram.
Příliš žluťoučký kůň úpěl ďábelské ódy.
Şu çılgın Türk, ağaçları öğütüyor.
Съешь же ещё этих мягких французских булок, да выпей чаю.
Москва — столица России; население около 13 миллионов человек.
Доброе утро! Как у тебя дела сегодня?
Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.
Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.
我能吞下玻璃而不伤身体。
今天天气很好，我们去公园散步吧！
東京は日本の首都です。ひらがなとカタカナも使います。
私はラーメンが大好きです。
한국어는 세종대왕이 만든 한글로 씁니다.
안녕하세요, 만나서 반갑습니다!
أنا قادر على أكل الزجاج و هذا لا يؤلمني.
مرحبا بالعالم! كيف حالك اليوم؟
मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती।
नमस्ते दुनिया, आप कैसे हैं?
שלום עולם, מה שלומך?
ฉันกินกระจกได้ แต่มันไม่ทำให้ฉันเจ็บ
Tiếng Việt có nhiều dấu: ă, â, ê, ô, ơ, ư, đ.
Ελληνικά και English και Русский in one line.
Mixed 中文 and English words 混合 in 一个 sentence.
naïve café résumé coöperate façade jalapeño
ﬁ ﬂ ligatures, ½ ¾ fractions, ℃ ™ © ® symbols
Ⅰ Ⅱ Ⅲ Ⅳ roman numerals and ① ② ③ circled digits
𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝒔𝒄𝒓𝒊𝒑𝒕 letters
Zero‍width​joiners and non‌breaking spaces here
e\u0301 combining acute vs é precomposed""".split("\n")
out += multilingual

emoji = """I love pizza 🍕 and tacos 🌮!
Family: 👨‍👩‍👧‍👦 and couple: 👩‍❤️‍👨
Thumbs: 👍 👍🏻 👍🏼 👍🏽 👍🏾 👍🏿
Flags: 🇺🇸 🇫🇷 🇯🇵 🇧🇷 🏳️‍🌈 🏴‍☠️
Professions: 👩‍💻 👨‍🚀 🧑‍🔬 👩🏽‍🏫
Faces😀😃😄😁😆😅🤣😂 no spaces
Keycaps: 1️⃣ 2️⃣ #️⃣ *️⃣
Hearts ❤️ 🧡 💛 💚 💙 💜 🖤 🤍 🤎""".split("\n")
out += emoji

specials = [
    "<|im_start|>user\nHello<|im_end|>",
    "<|im_start|>system You are helpful.<|im_end|><|im_start|>assistant",
    "<|endoftext|> after end of text",
    "text <|im_start|> inside <|im_end|> text",
    "<start_of_turn>user Hi there<end_of_turn>",
    "<start_of_turn>model\nSure!<end_of_turn>\n",
    "<bos><eos><pad><unk><mask>",
    "<table><tr><td>cell</td></tr></table>",
    "<h1>Title</h1><p>para</p><strong>bold</strong>",
    "<s> and </s> and <0x41> and <unused7>",
    "<|im_start|><|im_start|><|im_end|>",
    "<|im_startx|> <|im_end <im_start|>",
    "<repo_name>thaw<file_sep>src/main.rs<filename>x",
    "[multimodal] <start_of_image> <end_of_image>",
]
out += specials

# Whitespace: runs, tabs, leading and trailing spaces.
ws = []
for n in [1, 2, 3, 4, 7, 8, 16, 33]:
    ws.append(" " * n + "indented by %d" % n)
    ws.append("trailing %d" % n + " " * n)
    ws.append("mid" + " " * n + "gap")
    ws.append("\t" * (n % 5 + 1) + "tabs then text")
ws += ["a\tb\tc", " \t mixed \t whitespace \t ", "    ", "\t", " ", "x  y   z    w", "end with tab\t",
       "\u00a0non-breaking\u00a0spaces\u00a0", "ideographic\u3000space", "vertical\x0btab and form\x0cfeed",
       "carriage\rreturn", "crlf line\r"]
out += ws

# Numbers.
nums = ["0", "7", "42", "1234", "12345", "123456789", "3.14159265358979323846",
        "1,234,567.89", "1 000 000", "-273.15", "6.022e23", "0xDEADBEEF", "0b101010",
        "2026-11-22T00:44:00Z", "+1 (555) 010-9999", "v1.2.3-rc.4", "IPv4 192.168.0.1",
        "98765432109876543210987654321", "٠١٢٣٤٥٦٧٨٩ Arabic-Indic digits", "१२३ Devanagari digits",
        "１２３ fullwidth", "½+¼=¾", "10^9+7 = 1000000007"]
for _ in range(40):
    k = rng.randint(1, 40)
    nums.append("".join(rng.choice("0123456789") for _ in range(k)))
    nums.append("x=%d, y=%.6f, z=%e" % (rng.randint(-10**9, 10**9), rng.uniform(-1e3, 1e3), rng.uniform(0, 1e-3)))
out += nums

urls = ["https://example.com/path/to/page?query=1&lang=en#section",
        "http://localhost:8080/v1/chat/completions",
        "ftp://files.example.org/pub/README.txt",
        "mailto:someone@example.com?subject=Hello%20World",
        "https://ja.wikipedia.org/wiki/東京都",
        "git@github.example:owner/repo.git",
        "file:///home/user/My%20Documents/report.pdf",
        "www.example.co.uk/über-uns"]
out += urls
punct = ["!!!", "???", "...", "?!?!", "---", "===", "***", "~~~", "<<<>>>", "(((())))", "[[[]]]", "{{{}}}",
         "''' \"\"\"", "``` code ```", "--> <-- <=> =>", "a,b;c:d.e", "…", "—–-", "«quoted» „German“ “curly”",
         "#hashtag @mention $100 %20 ^caret &amp; *star", "can't won't I'm you're they've we'd she'll",
         "CAN'T WON'T I'M YOU'RE", "it's O'Reilly's", "don’t (curly apostrophe)"]
out += punct

# Mix: random concatenations of earlier lines with odd spacing.
base = list(out)
while len(out) < 2400:
    a, b = rng.choice(base), rng.choice(base)
    sep = rng.choice([" ", "  ", "\t", "", " | ", " 123 ", " 😀 ", " <|im_end|> "])
    out.append(a + sep + b)

# No line may contain a newline (the file is one case per line).
out = [l.replace("\n", " ") for l in out]
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "data", "corpus.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(out) + "\n")
print(len(out), "lines")
