"""Tell whether a requester's new words are only a thank-you, in French or English.

A "Merci !" answering a resolution must not reopen the ticket; "merci, mais ça ne
marche toujours pas" must. The decision is made on the text the writer added (quotes
already trimmed) and errs towards "not only thanks": a wrong "no" reopens a ticket as
before, a wrong "yes" would leave a request resolved, so a line counts only when every
word in it is a word of thanks or courtesy. What may follow (a name, a signature block)
is allowed only below a line of thanks, and never a line that reads as a sentence.

Pure and stdlib only; linear in a text that is cut short first (MAX_CHARS).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["only_thanks", "MAX_CHARS"]

# A thank-you with its signature fits here; a longer text is news and reopens.
MAX_CHARS = 1_500
# Lines of thanks and courtesy, then lines of signature, at most.
_MAX_LINES = 14
_MAX_SIGNATURE_LINES = 7
_MAX_SIGNATURE_WORDS = 7
# "Merci Jean-Pierre Martin": proper names after a word of thanks, at most.
_MAX_NAMES = 3

_THANKS = frozenset(
    "merci mercis remercie remercions remerciements remerciant"
    " thanks thank thankyou thx thnx tks ty cheers".split()
)
# Every word a line of thanks may hold besides the thanks themselves (accents folded,
# lower case). No negation, no "but", no "still", no "again" in the sense of a fault:
# those make a line news.
_COURTESY = _THANKS | frozenset(
    # French
    "mille beaucoup bcp bien infiniment encore pour tout toute tous toutes votre vos ton"
    " ta tes aide rapidite reactivite intervention efficacite retour reponse reponses"
    " aussi a au aux vous toi bonne bon bons bonnes journee soiree fin de d du des"
    " semaine week end weekend cordialement cdlt cordiales salutations sinceres"
    " meilleures amicalement amities bisous bises belle ok okay accord parfait"
    " parfaitement super top genial nickel impeccable excellent excellente c est ca cela"
    " marche remarche fonctionne fonctionnent remarchent marchent maintenant desormais"
    " resolu resolue regle reglee probleme le la les l tres vraiment et revoir bonjour"
    " bonsoir re rebonjour salut madame monsieur mme mr m cher chere chers cheres equipe"
    " service sympa gentil gentille efficace rapide un une grand gros je j nous info"
    " infos information informations explication explications conseil conseils"
    " solution temps patience depannage travail suivi recu bravo"
    # English
    " you very much so lot lots many for your the help quick fast prompt response reply"
    " support fix fixing great perfect awesome excellent brilliant wonderful nice good"
    " have day weekend week evening afternoon morning best regards kind kindest warm"
    " warmest sincerely yours all it works working worked now fine appreciated"
    " appreciate really truly hi hello dear team ok okay is that did trick problem issue"
    " solved resolved sorted fixed everything everyone guys and i we indeed once more"
    " of to my our was a an your wishes greetings take care sir madam ms mrs one again"
    " time quickly".split()
)
# Words no signature line starts with: "le wifi du bâtiment B", "mon poste" are news.
_ARTICLES = frozenset(
    "le la les l un une des du de d ce cette ces mon ma mes notre nos votre vos"
    " the a an this that these my our your".split()
)
# Words that make a line news wherever they stand, even one that looks like a name or a
# signature: negations and faults...
_FAULTS = frozenset(
    "ne n pas plus mais toujours jamais rien sauf hs panne probleme erreur bug souci"
    " marche fonctionne but not no still broken error fails failed failing issue"
    " problem down ko urgent however except".split()
)
# ...and the pronouns and verbs of a sentence, unless in capitals ("Library IT", "M. Martin").
_SENTENCE = frozenset(
    "je tu il elle on nous vous ils elles moi me m toi te lui leur se y est sont suis ai"
    " avons avez ont peux pouvez"
    " pourriez faut besoin voici ci joint i we you he she it they this is are am was were"
    " have has do does can could would will should please need attached".split()
)
_NEWS = _FAULTS | _SENTENCE

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
# Words (letters only), numbers, and any other single non-blank character.
_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]")
_SIGNATURE_SEPARATOR = re.compile(r"^-- ?$")


def _fold(text: str) -> str:
    """The text without accents (é -> e, ç -> c), case kept."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _capitalised(token: str) -> bool:
    return token[0].isupper()


def _thanks_line(tokens: list[str]) -> tuple[bool, bool]:
    """(whether a line is all thanks and courtesy, whether it thanks)."""
    thanks = False
    names = 0
    previous = ""
    for token in tokens:
        word = token.lower()
        if token.isdigit():
            return False, False
        if not token.isalpha():
            previous = token
            continue  # punctuation and symbols: "!", ",", ":)" ('?' is refused earlier)
        if word in _COURTESY:
            thanks = thanks or word in _THANKS
            names = 0
        elif (
            _capitalised(token)
            and word not in _NEWS
            and (previous.isalpha() or previous == "," or (previous == "-" and names))
            and names < _MAX_NAMES
        ):
            # "Merci Jean", "Thanks, Marie": a name right after a word, never a new
            # sentence ("Thanks. Broken").
            names += 1
        else:
            return False, False
        previous = token
    return True, thanks


def _signature_line(tokens: list[str], line: str) -> bool:
    """Tell whether a line reads as part of a signature: a name, a service, a phone.

    Its first word has a capital and is no article ("Secrétariat pédagogique", not "le
    wifi du bâtiment"); a line with an address or a link is contact details.
    """
    words = [t for t in tokens if t.isalpha()]
    if len(words) > _MAX_SIGNATURE_WORDS or "!" in tokens:
        return False
    for word in words:
        lower = word.lower()
        if lower in _FAULTS or (lower in _SENTENCE and not word.isupper()):
            return False
    if "@" in line or "http" in line.lower() or not words:
        return True
    first = words[0]
    return _capitalised(first) and (len(first) == 1 or first.lower() not in _ARTICLES)


def only_thanks(text: str) -> bool:
    """Tell whether a text is only a thank-you (with greetings, closings, a signature).

    Anything else (a question, a "but", a fault, a number, a long text) says no.
    """
    if len(text) > MAX_CHARS or "?" in text:
        return False
    lines = []
    for raw in text.splitlines():
        if _SIGNATURE_SEPARATOR.match(raw.rstrip()):
            break  # below "-- " is the signature block, whatever it holds
        if raw.strip():
            lines.append(raw.strip())
    if not lines or len(lines) > _MAX_LINES:
        return False
    thanked = False
    signature = 0
    for line in lines:
        tokens = _TOKEN.findall(_fold(line))
        courteous, thanks = _thanks_line(tokens)
        if courteous:
            thanked = thanked or thanks
            continue
        signature += 1
        if not thanked or signature > _MAX_SIGNATURE_LINES or not _signature_line(tokens, line):
            return False
    return thanked
