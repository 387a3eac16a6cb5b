"""The kinds of mail we send, and which of them carry a person's words.

Rate caps exist against loops and floods of mail no person wrote: an
acknowledgement answering an autoresponder answering it. A technician's answer
is another thing: its author wrote it for its reader, and a cap that kept it
back would drop their words (issue 14: six "Suivi" mails to a secretariat that
had opened six requests were never sent). So the automatic cap counts and stops
AUTOMATIC kinds only; the kinds in WORDS pass it and meet only the loop guard,
a much higher cap per address and ticket (ratecap.py).

Every template in notify/templates/<lang>/ is one of these kinds; a test checks
that each is in exactly one set. A kind in neither (a template a future change
adds without saying) is treated as automatic: a cap that holds back too much is
seen in `outbox list`, one that lets a loop through is not.
"""

from __future__ import annotations

__all__ = [
    "ACK",
    "AUTOMATIC",
    "CONFIRM",
    "ASSIGNED_NOTES",
    "TECH_COLLEAGUE",
    "TECH_COMMENT",
    "TECH_CONFIRM",
    "TECH_TAKEN",
    "TECH_UNSENT",
    "WORDS",
    "ANSWERS",
    "automatic",
]

ACK = "ack"
CONFIRM = "confirm"
# To a technician whose mail was kept as an internal note for want of proof.
TECH_CONFIRM = "tech_confirm"
# To a technician whose answer by mail could not be sent to its reader.
TECH_UNSENT = "tech_unsent"
# Among technicians (handover): a note's news; "X gave you ticket #n" when it quotes
# internal notes; "X took ticket #n" to the rest of the group; a colleague answered
# on your ticket. Answers to these stay internal notes (ingest/thread.py).
TECH_COMMENT = "tech_comment"
ASSIGNED_NOTES = "assigned_notes"
TECH_TAKEN = "tech_taken"
TECH_COLLEAGUE = "tech_colleague"

# Mail the helpdesk writes of itself: an event told, a question asked. Capped.
AUTOMATIC = frozenset(
    {
        ACK,  # "we received your request": the classic autoresponder loop
        "taken",  # "X has your request"
        "closed",  # "your request is closed" (mostly the scheduler's)
        CONFIRM,  # "did you send this?": a forger must not flood the real address
        TECH_CONFIRM,  # the same question to a technician
        TECH_UNSENT,  # "your answer did not go": news about a mail, not words
        # "X gave you ticket #n": an act, and the words it quotes were each told
        # in their own mail already (its notes too, in tech_comment).
        "assigned",
        ASSIGNED_NOTES,
        TECH_TAKEN,  # "X took ticket #n": news of an act
        TECH_COLLEAGUE,  # "a colleague answered": the answer itself went to its reader
    }
)

# Mail whose body is what a person wrote for its reader. Never capped as
# automatic mail; only the loop guard holds them.
WORDS = frozenset(
    {
        "followup",  # a technician's answer to the requester
        "resolved",  # the resolution, with its text
        "tech_new",  # the requester's request, to the technicians
        "tech_followup",  # the requester's (or a participant's) follow-up
        TECH_COMMENT,  # a colleague's internal note
        "reopened",  # the words that reopened the request, when there are some
    }
)

# Of WORDS, the kinds that carry a technician's answer to the requester's side: when
# one is not sent, its author must hear of it.
ANSWERS = frozenset({"followup", "resolved"})


def automatic(kind: str) -> bool:
    """Tell whether mail of this kind is automatic, so counted and stopped by the cap."""
    return kind not in WORDS
