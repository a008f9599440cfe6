"""The "lexicon-moderation" model: hand-written patterns scored per OpenAI moderation category.

The text is lower-cased and whitespace-normalised, and a few harmless idioms ("kill the
process", "shoot a photo", "the naked eye") are removed. Every rule is a regular expression
with scores for one or more categories. A category's score combines the rules that match as
independent evidence, ``1 - prod(1 - score)``, so it stays within [0, 1]; a parent category
("harassment") scores at least as high as its children ("harassment/threatening"). A category
is flagged when its score reaches its threshold, and a text is flagged when any category is.

Mentions alone ("violence", "suicide prevention") score low; threats, intent, instructions
and targeted abuse score high.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from gantry.ports import ModerationVerdict

CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
THRESHOLDS: Mapping[str, float] = {c: 0.3 if c == "sexual/minors" else 0.5 for c in CATEGORIES}


@dataclass(frozen=True)
class Rule:
    pattern: str
    scores: Mapping[str, float]


def _alt(*words: str) -> str:
    return "(?:" + "|".join(words) + ")"


_HARM = _alt(
    r"kill", r"murder", r"stab", r"shoot", r"strangle", r"hurt", r"attack", r"punch",
    r"slaughter", r"behead", r"torture", r"assault", r"burn",
)  # fmt: skip
_MAIM = r"break (?:your|his|her|their) (?:legs?|arms?|neck|face|bones)"
_YOU = _alt(r"you", r"u", r"ya", r"your (?:family|kids|wife|husband|mother)")
_PEOPLE = _alt(_YOU, r"him", r"her", r"them", r"everyone", r"somebody", r"someone")
_WILL = _alt(
    r" will", r"'ll", r" am going to", r"'m going to", r" am gonna", r"'m gonna", r" gonna",
    r" are going to", r"'re going to", r" are gonna", r"'re gonna", r" want to", r" wanna",
    r" shall", r" would",
)  # fmt: skip
_HOW = _alt(
    r"how (?:to|do i|do you|can i|would i|should i)", r"ways? to", r"best way to",
    r"easiest way to", r"steps to", r"guide to", r"instructions (?:for|to)", r"teach me (?:to|how)",
    r"help me",
)  # fmt: skip
_GROUP = _alt(
    r"immigrants", r"refugees", r"foreigners", r"muslims", r"jews", r"christians", r"hindus",
    r"buddhists", r"sikhs", r"atheists", r"black people", r"white people", r"asians",
    r"africans", r"arabs", r"mexicans", r"latinos", r"women", r"gay people", r"gays",
    r"lesbians", r"trans people", r"transgender people", r"disabled people", r"the disabled",
    r"migrants", r"roma",
)  # fmt: skip
_DEHUMANISING = _alt(
    r"animals", r"vermin", r"rats", r"parasites", r"subhuman", r"inferior", r"filth", r"scum",
    r"a disease", r"cockroaches", r"savages", r"trash", r"a plague", r"not human",
)  # fmt: skip
_ERADICATE = _alt(
    r"(?:be )?killed", r"die", r"(?:be )?exterminated", r"(?:be )?wiped out",
    r"(?:be )?eliminated", r"(?:be )?gassed", r"(?:be )?shot", r"(?:be )?hanged",
)  # fmt: skip
_INSULT = _alt(
    r"idiot", r"stupid", r"moron", r"loser", r"worthless", r"pathetic", r"useless", r"dumb",
    r"ugly", r"disgusting", r"fool", r"clown", r"imbecile", r"garbage", r"trash", r"a joke",
    r"a waste of space",
)  # fmt: skip
_DRUGS = _alt(
    r"meth", r"methamphetamine", r"cocaine", r"crack", r"heroin", r"fentanyl", r"lsd",
    r"mdma", r"illegal drugs", r"drugs",
)  # fmt: skip
_CRIME = _alt(
    r"launder (?:money|cash)", r"counterfeit (?:money|bills|cash|notes)",
    r"steal (?:a |an |someone's |somebody's )?(?:identity|credit card|car|password|wallet)",
    r"pick a lock", r"hack into", r"shoplift", r"evade (?:taxes|tax)", r"phish",
    r"break into (?:a|an|someone's|somebody's) (?:house|home|car|account)",
    r"forge (?:a |an )?(?:signature|passport|document)",
    r"hotwire a car", r"skim (?:credit )?cards",
)  # fmt: skip
_WEAPON = _alt(
    r"(?:pipe )?bomb", r"explosives?", r"molotov(?: cocktail)?", r"grenade", r"ghost gun",
    r"untraceable gun", r"nerve agent", r"napalm", r"poison gas", r"silencer",
)  # fmt: skip
_SEXUAL = _alt(
    r"porn", r"pornography", r"pornographic", r"have sex", r"having sex", r"had sex",
    r"sex with", r"sexual intercourse", r"sexually explicit", r"explicit sex\w*", r"erotic\w*",
    r"nudes", r"orgasm\w*", r"genitals", r"sexual acts?", r"xxx", r"strip(?:ping)? naked",
)  # fmt: skip
_MINOR = _alt(
    r"child", r"children", r"kids?", r"minors?", r"underage", r"under-age", r"teens?",
    r"teenagers?", r"preteens?", r"\d{1,2}[- ]?(?:year|yr)s?[- ]?old", r"schoolgirls?",
    r"schoolboys?", r"little (?:girl|boy)s?", r"young (?:girl|boy)s?",
)  # fmt: skip
_SELF = _alt(r"myself", r"my self", r"my own life", r"my life", r"it all")
_SELF_HARM = _alt(r"kill", r"hurt", r"harm", r"cut", r"end", r"starve", r"injure", r"poison")


def _rule(pattern: str, **scores: float) -> Rule:
    keyed = {name.replace("__", "/").replace("_", "-"): value for name, value in scores.items()}
    unknown = set(keyed) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown moderation categories {sorted(unknown)}")
    return Rule(pattern, keyed)


# Keyword arguments name categories: "__" stands for "/" and "_" for "-".
RULES = (
    # threats against the reader or others
    _rule(
        rf"\b(?:i|we){_WILL} (?:\w+ ){{0,4}}(?:{_HARM}\w* {_PEOPLE}|beat {_PEOPLE} up|{_MAIM})\b",
        harassment__threatening=0.92,
        harassment=0.8,
        violence=0.9,
    ),
    _rule(
        r"\b(?:you|u)(?: will|'ll| are going to|'re going to|'re gonna) (?:die|pay|regret)\b",
        harassment__threatening=0.8,
        harassment=0.7,
        violence=0.6,
    ),
    _rule(
        r"\b(?:i hope|hope) (?:you|u) (?:die|get hurt|suffer)\b|\byou deserve to die\b",
        harassment__threatening=0.75,
        harassment=0.8,
        violence=0.6,
    ),
    _rule(
        r"\b(?:i know where (?:you|u) live|watch your back|you'?re dead|you are dead)\b",
        harassment__threatening=0.7,
        harassment=0.6,
        violence=0.5,
    ),
    _rule(
        r"\b(?:go )?kill (?:yourself|urself|your self)\b|\bkys\b",
        harassment=0.9,
        harassment__threatening=0.6,
        self_harm=0.55,
    ),
    # insults and targeted abuse
    _rule(
        rf"\b(?:you|u)(?:'re| are|r)(?: such| so| a| an| really| totally| the)* {_INSULT}\b",
        harassment=0.8,
    ),
    _rule(rf"\b(?:what an?|you) {_INSULT}\b", harassment=0.55),
    _rule(r"\b(?:nobody|no one|everyone) (?:likes|loves|wants|hates) you\b", harassment=0.65),
    _rule(r"\bshut (?:up|your mouth)\b", harassment=0.4),
    # hate
    _rule(
        rf"\b(?:all |those |these |the )?{_GROUP} (?:are|is) (?:all |just |nothing but )?"
        rf"{_DEHUMANISING}\b",
        hate=0.9,
        harassment=0.5,
    ),
    _rule(
        rf"\b{_GROUP} (?:should|must|deserve to|need to|ought to) {_ERADICATE}\b",
        hate__threatening=0.92,
        hate=0.9,
        violence=0.85,
    ),
    _rule(
        rf"\b(?:kill|exterminate|wipe out|eliminate|gas|get rid of) (?:all )?(?:the |those )?"
        rf"{_GROUP}\b",
        hate__threatening=0.9,
        hate=0.85,
        violence=0.85,
    ),
    _rule(rf"\bi (?:hate|despise|can't stand) (?:all )?(?:the )?{_GROUP}\b", hate=0.8),
    _rule(rf"\b{_GROUP} (?:don't|do not) belong (?:here|in this country)\b", hate=0.65),
    # self-harm
    _rule(
        rf"\b(?:i|i'm|i am)(?: really| just)?(?: want| wanna| going| planning| plan| need|"
        rf" thinking about| gonna)(?: to)? {_SELF_HARM}(?:ing)? {_SELF}\b",
        self_harm=0.9,
        self_harm__intent=0.9,
    ),
    _rule(
        r"\b(?:i (?:don't|do not) want to (?:live|be alive|wake up)|"
        r"(?:no|nothing|no reason) to live for|i'?m better off dead|i am better off dead)\b",
        self_harm=0.8,
        self_harm__intent=0.75,
    ),
    _rule(
        rf"\b{_HOW} (?:\w+ ){{0,2}}(?:{_SELF_HARM} (?:myself|yourself|oneself)|"
        r"commit suicide|overdose|hang (?:myself|yourself))\b",
        self_harm=0.85,
        self_harm__instructions=0.88,
        self_harm__intent=0.4,
    ),
    _rule(r"\b(?:suicid\w*|self[- ]harm\w*|cutting myself|cut myself)\b", self_harm=0.45),
    # violence
    _rule(rf"\b{_HARM}(?:s|ed|ing)?\b", violence=0.3),
    _rule(r"\b(?:massacre|genocide|terror(?:ist)? attack|mass shooting|bombing)s?\b", violence=0.6),
    _rule(
        r"\b(?:gore|gory|dismember\w*|disembowel\w*|entrails|mutilat\w+|decapitat\w+|"
        r"eviscerat\w+|blood (?:everywhere|spatter\w*|pool\w*|gushing|soaked)|"
        r"(?:guts|brains) (?:spilled|splattered|everywhere)|"
        r"severed (?:head|limbs?|arms?|legs?))\b",
        violence__graphic=0.85,
        violence=0.7,
    ),
    # illicit
    _rule(
        rf"\b{_HOW} (?:\w+ ){{0,3}}(?:make|cook|synthesi[sz]e|produce|buy|sell|smuggle|grow) "
        rf"(?:\w+ ){{0,2}}{_DRUGS}\b",
        illicit=0.85,
    ),
    _rule(rf"\b{_HOW} (?:\w+ ){{0,3}}{_CRIME}", illicit=0.82),
    _rule(rf"\b{_CRIME}", illicit=0.35),
    _rule(
        rf"\b{_HOW} (?:\w+ ){{0,3}}(?:make|build|assemble|create|get|buy|3d print) "
        rf"(?:\w+ ){{0,2}}{_WEAPON}\b",
        illicit__violent=0.9,
        illicit=0.85,
        violence=0.6,
    ),
    _rule(
        rf"\b{_HOW} (?:\w+ ){{0,3}}poison (?:someone|somebody|a person|my \w+|him|her|them)\b",
        illicit__violent=0.85,
        illicit=0.8,
        violence=0.75,
    ),
    # sexual
    _rule(rf"\b{_SEXUAL}\b", sexual=0.75),
    _rule(r"\b(?:naked|nude|sexy|aroused)\b", sexual=0.35),
    _rule(r"\b(?:child porn\w*|cp links|csam)\b", sexual__minors=0.95, sexual=0.9),
)

_HARMLESS = (
    r"\b(?:kill(?:s|ed|ing)? (?:the |a |an |this |that |my |all |off )?(?:process(?:es)?|tasks?|"
    r"jobs?|threads?|programs?|apps?|applications?|switch|time|engine|lights?|bacteria|germs|"
    r"weeds|pods?|containers?|sessions?|servers?|connections?|the mood)|killer (?:app|feature)|"
    r"shoot(?:ing)? (?:a |the )?(?:photo|video|film|picture|scene|star|hoops|an email|a message)|"
    r"shooting stars?|naked eye|beat (?:the )?(?:eggs|butter|batter|cream|mixture)|"
    r"burn(?:ing|ed|t)? (?:calories|fat|a cd|a dvd|the toast|rubber)|attack surface|"
    r"heart attack|panic attack|brute force attack|sex education|sexual health)\b"
)


@cache
def _compiled() -> tuple[
    re.Pattern[str], re.Pattern[str], tuple[tuple[re.Pattern[str], Rule], ...]
]:
    rules = tuple((re.compile(rule.pattern), rule) for rule in RULES)
    return re.compile(_HARMLESS), re.compile(rf"\b{_MINOR}\b"), rules


def moderate(text: str) -> ModerationVerdict:
    harmless, minor, rules = _compiled()
    normalised = harmless.sub(" ", _normalise(text))
    remaining = dict.fromkeys(CATEGORIES, 1.0)
    for pattern, rule in rules:
        if pattern.search(normalised):
            for category, score in rule.scores.items():
                remaining[category] *= 1.0 - score
    scores = {c: round(1.0 - remaining[c], 6) for c in CATEGORIES}
    if scores["sexual"] >= 0.5 and minor.search(normalised):
        scores["sexual/minors"] = max(scores["sexual/minors"], 0.9)
    for category in CATEGORIES:
        parent = category.split("/")[0]
        scores[parent] = max(scores[parent], scores[category])
    flags = {c: scores[c] >= THRESHOLDS[c] for c in CATEGORIES}
    return ModerationVerdict(any(flags.values()), flags, scores)


def _normalise(text: str) -> str:
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return " ".join(text.split())
