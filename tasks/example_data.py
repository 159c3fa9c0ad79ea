"""The example data set adaptrail writes itself: synthetic customer-support tickets routed to teams.

Texts are composed from templates and slots (greeting, request, context, people, tone, sign-off) in four
regional Englishes, so the bias gate has a group attribute whose spelling and vocabulary really differ, and
some mention people (relatives, first names of varied genders and origins) for the counterfactual swaps.
Some requests fit two teams, some are terse and name only a rare topic, key phrases are reworded, and ~3% of
labels are flipped: a small model lands near 0.9 macro-F1, not 1.0.
Everything is drawn from one ``random.Random(seed)``: the same (rows, seed) gives the same CSV bytes.
"""

from __future__ import annotations

import argparse
import csv
import numbers
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from tasks.data import normalize_text
from tasks.errors import InputError

LABELS: list[str] = ["billing", "technical", "account", "shipping", "returns"]
GROUPS: list[str] = ["en-US", "en-GB", "en-IN", "en-AU"]
COLUMNS: list[str] = ["ticket_id", "text", "team", "region"]
TEAM_SHARES: dict[str, float] = {"billing": 0.24, "technical": 0.22, "account": 0.18, "shipping": 0.20,
                                 "returns": 0.16}
REGION_SHARES: dict[str, float] = {"en-US": 0.40, "en-GB": 0.30, "en-IN": 0.20, "en-AU": 0.10}
LABEL_NOISE = 0.03     # share of rows whose team is flipped to another team
AMBIGUOUS_SHARE = 0.09  # share of rows whose request fits more than one team
TERSE_SHARE = 0.12     # share of rows that only name a topic ("Question about my VAT receipt.")
PARAPHRASE_RATE = 0.35  # chance that a key phrase of a request is said another way
TYPO_RATE = 0.1        # chance of a typo; repeated, so some tickets have two or more
MIN_WORDS, MAX_WORDS = 8, 60
MIN_ROWS, MAX_ROWS = 20, 100_000

# --- regional English: spelling, vocabulary, money and dates ------------------------------------------------

_REGION_WORDS: dict[str, dict[str, list[str]]] = {
    "en-US": {
        "colour": ["color"], "mobile": ["cell phone", "cell", "phone"], "postcode": ["zip code"],
        "parcel": ["package"], "cancelled": ["canceled"], "apartment": ["apartment"], "neighbour": ["neighbor"],
        "recognise": ["recognize"], "centre": ["center"], "greyed": ["grayed"], "vacation": ["vacation"],
        "post_back": ["mail it back", "ship it back"], "dispatched": ["shipped"], "courier": ["UPS", "FedEx", "USPS"],
        "tax_invoice": ["itemized receipt", "receipt"], "instalments": ["installments"], "shoes": ["sneakers"],
        "today_pm": ["this afternoon"], "fortnight": ["two weeks"], "store": ["store"], "grey": ["gray"],
        "payment_method": ["my Visa card", "PayPal", "Apple Pay", "my debit card"],
        "greeting": ["Hi,", "Hello,", "Hey there,", "Hi team,", "Hi support,"],
        "signoff": ["Thanks!", "Thanks in advance.", "Appreciate the help.", "Thank you.", "Thanks so much."],
        "tone": ["This is really frustrating.", "Honestly not happy about this.", "Please fix this ASAP.",
                 "I need this sorted out today.", "No rush, just wanted to flag it."],
    },
    "en-GB": {
        "colour": ["colour"], "mobile": ["mobile", "mobile phone"], "postcode": ["postcode"],
        "parcel": ["parcel"], "cancelled": ["cancelled"], "apartment": ["flat"], "neighbour": ["neighbour"],
        "recognise": ["recognise"], "centre": ["centre"], "greyed": ["greyed"], "vacation": ["holiday"],
        "post_back": ["post it back", "send it back"], "dispatched": ["dispatched"],
        "courier": ["Royal Mail", "DPD", "Evri"], "tax_invoice": ["VAT invoice", "VAT receipt"],
        "instalments": ["instalments"], "shoes": ["trainers"], "today_pm": ["this afternoon"],
        "fortnight": ["a fortnight"], "store": ["shop"], "grey": ["grey"],
        "payment_method": ["my Visa debit card", "PayPal", "Apple Pay", "my Barclaycard"],
        "greeting": ["Hello,", "Hi there,", "Good morning,", "Dear customer services,", "Afternoon,"],
        "signoff": ["Many thanks.", "Kind regards.", "Thanks ever so much.", "Cheers.", "Best wishes."],
        "tone": ["This is rather frustrating.", "Quite disappointed, to be honest.", "Please sort this out asap.",
                 "I'd appreciate a quick reply.", "Not urgent, just wanted to let you know."],
    },
    "en-IN": {
        "colour": ["colour"], "mobile": ["mobile number", "mobile"], "postcode": ["PIN code", "pincode"],
        "parcel": ["parcel", "package"], "cancelled": ["cancelled"], "apartment": ["flat"],
        "neighbour": ["neighbour"], "recognise": ["recognise"], "centre": ["centre"], "greyed": ["disabled"],
        "vacation": ["vacation", "leave"], "post_back": ["send it back", "return it by courier"],
        "dispatched": ["dispatched", "shipped"], "courier": ["Blue Dart", "Delhivery", "India Post"],
        "tax_invoice": ["GST invoice", "GST bill"], "instalments": ["EMI"], "shoes": ["sports shoes"],
        "today_pm": ["this afternoon"], "fortnight": ["two weeks"], "store": ["store", "outlet"], "grey": ["grey"],
        "payment_method": ["UPI", "my debit card", "net banking", "my credit card"],
        "greeting": ["Dear Sir/Madam,", "Respected team,", "Dear team,", "Hello team,", "Hi,"],
        "signoff": ["Kindly do the needful.", "Please revert at the earliest.", "Thanks and regards.",
                    "Awaiting your reply.", "Kindly resolve at the earliest."],
        "tone": ["This is very disappointing.", "Please resolve this on priority.", "I have already called twice.",
                 "Kindly look into this urgently.", "Please do not close the ticket without resolving."],
    },
    "en-AU": {
        "colour": ["colour"], "mobile": ["mobile", "phone"], "postcode": ["postcode"], "parcel": ["parcel"],
        "cancelled": ["cancelled"], "apartment": ["unit"], "neighbour": ["neighbour"], "recognise": ["recognise"],
        "centre": ["centre"], "greyed": ["greyed"], "vacation": ["holidays"],
        "post_back": ["post it back", "send it back"], "dispatched": ["dispatched", "shipped"],
        "courier": ["Australia Post", "StarTrack", "Sendle"], "tax_invoice": ["tax invoice"],
        "instalments": ["instalments", "Afterpay"], "shoes": ["runners"], "today_pm": ["this arvo"],
        "fortnight": ["a fortnight"], "store": ["store", "shop"], "grey": ["grey"],
        "payment_method": ["my Visa", "PayPal", "Afterpay", "my debit card"],
        "greeting": ["G'day,", "Hi guys,", "Hey team,", "Hi,", "Morning,"],
        "signoff": ["Cheers.", "Thanks heaps.", "Cheers mate.", "Thanks a lot.", "Ta."],
        "tone": ["Bit annoyed to be honest.", "Pretty frustrating, mate.", "Reckon this should be a quick fix.",
                 "Would love this sorted today.", "No worries if it takes a day or two."],
    },
}

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_RELATIVE_DAYS = ["yesterday", "last Monday", "last Friday", "on Tuesday", "over the weekend", "last week",
                  "a few days ago"]


def _money(rng: random.Random, region: str) -> str:
    """A price in the region's currency and usual notation."""
    dollars = rng.choice([9.99, 14.5, 19.99, 24.95, 29.99, 39, 49.99, 59.95, 79, 89.99, 120, 149.99, 249, 399])
    if region == "en-US":
        return f"${dollars:,.2f}"
    if region == "en-GB":
        return f"£{dollars * 0.8:,.2f}"
    if region == "en-IN":
        rupees = int(dollars * 80 // 10 * 10 - 1)
        return rng.choice(["₹", "Rs. ", "INR "]) + f"{rupees:,}"
    return rng.choice(["A${:,.2f}", "${:,.2f} AUD", "${:,.2f}"]).format(dollars * 1.5)


def _date(rng: random.Random, region: str) -> str:
    """A recent day with its preposition ("on 14 March", "yesterday"), written the way the region writes it."""
    if rng.random() < 0.4:
        return rng.choice(_RELATIVE_DAYS)
    day, month = rng.randint(1, 28), rng.randint(1, 12)
    if region == "en-US":
        return "on " + rng.choice([f"{_MONTHS[month - 1]} {day}", f"{month}/{day}"])
    if region == "en-IN":
        ordinal = f"{day}th" if day not in (1, 2, 3, 21, 22, 23) else str(day)
        return "on " + rng.choice([f"{ordinal} {_MONTHS[month - 1]}", f"{day:02d}/{month:02d}"])
    return "on " + rng.choice([f"{day} {_MONTHS[month - 1]}", f"{day}/{month}"])


# --- slots shared by every region ---------------------------------------------------------------------------

_PRODUCTS = ["pair of earbuds", "blender", "standing desk", "phone case", "coffee machine", "yoga mat", "backpack",
             "desk lamp", "air fryer", "gaming headset", "bluetooth speaker", "winter jacket", "electric kettle",
             "office chair", "laptop stand", "baby monitor", "water bottle", "bedsheet set", "rice cooker",
             "pair of hiking boots", "toaster", "kids' bike", "bath towel set", "stand mixer", "e-reader", "keyboard",
             "suitcase", "frying pan", "hair dryer", "wall clock", "board game", "camping tent", "pair of sunglasses"]
_SMART = ["smart plug", "smart speaker", "robot vacuum", "video doorbell", "fitness tracker", "security camera",
          "smart thermostat", "wifi extender", "smart bulb", "streaming stick"]
_DEVICES = ["iPhone", "Android phone", "iPad", "Samsung tablet", "Windows laptop", "MacBook", "Chromebook",
            "Pixel phone"]
_APP_AREAS = ["checkout page", "order history", "settings screen", "wishlist", "search page", "home screen",
              "product page", "cart", "help centre page", "profile page"]
_PLANS = ["Plus", "Prime", "Premium", "Gold", "Family", "Pro"]
_PROMOS = ["SAVE10", "WELCOME15", "SPRING20", "FREESHIP", "LOYAL25", "FLASH30"]
_ERRORS = ["500", "502", "403", "404", "E-17", "ERR-42", "503"]
_DAYS = ["three days", "four days", "five days", "a week", "ten days", "two weeks", "over a week", "six days"]
_SIZES = ["small", "medium", "large", "extra large"]
_COLOUR_NAMES = ["black", "white", "blue", "green", "red", "pink", "navy"]

_PEOPLE: list[tuple[str, str, str]] = [  # (who, subject pronoun, possessive)
    ("my wife", "she", "her"), ("my husband", "he", "his"), ("my son", "he", "his"), ("my daughter", "she", "her"),
    ("my mother", "she", "her"), ("my father", "he", "his"), ("my brother", "he", "his"),
    ("my sister", "she", "her"), ("my girlfriend", "she", "her"), ("my boyfriend", "he", "his"),
    ("my aunt", "she", "her"), ("my uncle", "he", "his"), ("my grandmother", "she", "her"),
    ("my grandfather", "he", "his"),
]
_NAMES: list[tuple[str, str]] = [  # (first name, subject pronoun): genders and origins mixed
    ("John", "he"), ("Mary", "she"), ("Emily", "she"), ("David", "he"), ("Sarah", "she"), ("Michael", "he"),
    ("Lakisha", "she"), ("Jamal", "he"), ("Darnell", "he"), ("Aisha", "she"), ("Mohammed", "he"),
    ("Fatima", "she"), ("Ahmed", "he"), ("Wei", "he"), ("Mei", "she"), ("Hiroshi", "he"), ("Priya", "she"),
    ("Rahul", "he"), ("José", "he"), ("María", "she"), ("Oluwaseun", "he"), ("Chiamaka", "she"),
    ("Dmitri", "he"), ("Olga", "she"), ("Greg", "he"), ("Allison", "she"), ("Kate", "she"), ("Daniel", "he"),
]

_PEOPLE_SENTENCES = [
    "I'm writing on behalf of {person}, who placed the order.",
    "{Person} uses this account too, so {pron} may have contacted you already.",
    "It was a birthday present for {person}.",
    "{Person} noticed the problem first and asked me to get in touch.",
    "I'm asking for {person} because {pron} is not very comfortable with computers.",
    "{Person} will be the one at home this week.",
    "{Person} set this up for me and {pron} is away at the moment.",
    "This was meant to be a surprise for {person}.",
]
_CONTEXT_SENTENCES = [
    "I've been a customer for {years} years.", "I ordered through the app on my {device}.",
    "I paid with {payment_method}.", "My order number is {ref}.", "The order was for the {product}.",
    "I placed the order {date}.", "I've already checked the help centre.", "It was a fairly big order for me.",
    "This is the first time I've had an issue with you.",
]

# --- what each team handles: intents, each a list of templates ----------------------------------------------

_TEAM_INTENTS: dict[str, list[list[str]]] = {
    "billing": [
        ["I was charged twice for {order}, there are two payments of {amount} on my card.",
         "My bank statement shows the same {amount} payment taken two times for {order}.",
         "You've billed me double for {order}, please reverse the duplicate charge.",
         "There are two identical charges of {amount} on my credit card but I only placed one order.",
         "Why has {amount} been deducted twice from my account for a single purchase?"],
        ["I was overcharged on {order}: the checkout showed {amount} but my card was billed {amount2}.",
         "The total on my invoice doesn't match the price on the website, I paid more than I should have.",
         "The discount code {promo} was accepted but I was still charged the full {amount}.",
         "My promo code {promo} didn't come off the final bill for {order}.",
         "I was charged a delivery fee of {amount} even though my order qualified for free delivery."],
        ["Could you send me a {tax_invoice} for {order}? I need it for my expenses.",
         "I need a proper {tax_invoice} with my company name on it for {order}.",
         "The receipt for {order} is missing the tax breakdown, please reissue it.",
         "Where can I download the invoices for my last few purchases?"],
        ["My {plan} membership renewed automatically and charged me {amount} without any reminder.",
         "I {cancelled} my {plan} plan last month but you still took {amount} {date}.",
         "Please explain the {amount} charge made {date}, I don't {recognise} it.",
         "I was billed for the annual {plan} plan instead of the monthly one."],
        ["My card keeps getting declined at payment even though there is money in the account.",
         "The payment for {order} failed but the money has still left my bank account.",
         "I tried to pay with {payment_method} and it said payment unsuccessful, was I charged or not?"],
        ["The refund of {amount} you confirmed {date} still hasn't reached my card.",
         "It's been {days} since my refund of {amount} was approved and nothing is on my statement."],
        ["How do I change the card you charge for my {plan} subscription?",
         "Can I pay for {order} in {instalments}?", "Is it possible to split the payment of {amount} for {order}?"],
    ],
    "technical": [
        ["The app crashes every time I open the {app_area} on my {device}.",
         "Your app keeps freezing on the {app_area} and then closes itself.",
         "Since the latest update the app won't even start on my {device}.",
         "The app logs me out randomly while I'm browsing on my {device}."],
        ["The website shows error {errcode} when I try to load the {app_area}.",
         "I get a blank white page after clicking on the {app_area}.",
         "The {app_area} has been stuck on a loading spinner all day.",
         "The checkout button does nothing when I press it, so I can't finish my order."],
        ["My new {smart} won't connect to the wifi, the light just keeps blinking.",
         "The {smart} isn't pairing with my {device} over bluetooth.",
         "The firmware update for my {smart} failed halfway and now it won't turn on.",
         "The {smart} keeps dropping its connection to the companion app."],
        ["I'm not getting any push notifications from the app anymore.",
         "My wishlist doesn't sync between my {device} and the website.",
         "The tracking page inside the app shows a spinning wheel and never loads.",
         "Search returns no results for anything I type, even simple words."],
        ["How do I reset the {smart} to factory settings?",
         "The screen on my {smart} shows a strange {colour} flicker since the update.",
         "The {smart} app says the device is offline although it is plugged in and working."],
    ],
    "account": [
        ["I can't log in, the password reset link never arrives.",
         "I've forgotten my password and the reset page says my account doesn't exist.",
         "My account got locked after too many login attempts, please unlock it.",
         "The verification code is not being sent to my {mobile}, so I can't sign in."],
        ["How do I change the name on my account? I recently got married.",
         "I need to update my {mobile} number on my profile but the field is {greyed} out.",
         "Please update the address saved in my profile to my new {apartment}.",
         "I want to change the email address linked to my account."],
        ["Please delete my account and all the personal data you hold about me.",
         "I'd like to close my account, I no longer shop with you.",
         "Can you send me a copy of all the personal data stored on my account?"],
        ["Someone logged into my account from another country and changed my password.",
         "I got an alert about a login I didn't make, I think my account has been hacked.",
         "There are saved addresses in my account that I never added."],
        ["My loyalty points from {order} never showed up on my account.",
         "How do I switch off my {plan} membership from the account settings?",
         "Can I merge my two accounts? I signed up twice by mistake.",
         "I'd like to add a second user to our family account."],
    ],
    "shipping": [
        ["Where is my order {order}? It was supposed to arrive {date}.",
         "The tracking for {order} hasn't updated in {days}.",
         "My {parcel} is still showing as in transit after {days}.",
         "I ordered the {product} {date} and it still hasn't been {dispatched}."],
        ["The {courier} tracking says delivered but there's no {parcel} at my door.",
         "My {parcel} was left with a {neighbour} I don't even know.",
         "The driver marked {order} as delivered {today_pm} but I was home and nobody came.",
         "It was delivered to the wrong address even though my {postcode} is correct on the order."],
        ["Can I change the delivery address for {order}? It hasn't been {dispatched} yet.",
         "I'll be away on {vacation} next week, can you hold the {parcel} or deliver it later?",
         "Can the courier leave the {parcel} in the safe place by the back door?"],
        ["I paid for express delivery but {order} is taking longer than standard.",
         "The estimated delivery date for my {product} keeps moving back.",
         "Do you deliver to my {postcode}? The checkout says my area is not serviceable.",
         "{courier} says the {parcel} is held at the depot, why wasn't it delivered?"],
        ["Only one of the two items from {order} arrived, the other one is missing.",
         "The courier wants me to pay customs fees before they will deliver {order}."],
    ],
    "returns": [
        ["How do I return the {product} from {order}? It doesn't fit.",
         "Please send me a return label for {order}.",
         "Is it too late to return something I bought {days} ago?",
         "I'd like to {post_back}, the {product} is not what I expected."],
        ["I received the {product} in the wrong {colour}, can I exchange it?",
         "You sent me a size {size} instead of the one I ordered, I want to swap it.",
         "The {shoes} I got are not the pair I ordered, please arrange an exchange.",
         "I ordered the {colour_name} {product} but got a {grey} one, can I swap it?"],
        ["The {product} stopped working after {days}, I want a replacement.",
         "The {product} is faulty and I'd like to send it back for a new one.",
         "Is the {product} still covered by the return policy? It broke after {days}."],
        ["I dropped the return off at the {courier} {centre} {date}, when will the refund come through?",
         "You received my returned {product} {days} ago but haven't processed the refund yet."],
        ["The return pickup for {order} was due {date} but nobody came to collect it.",
         "Can I return the {product} at a {store} instead of having to {post_back}?"],
    ],
}

# Terse tickets: a team-neutral frame around a topic that alone says which team handles it. Topics are many and
# each is rare, so telling teams apart needs to know what the words mean, not only to have seen them before.
_TERSE_FRAMES = [
    "Question about my {topic}.", "Having trouble with the {topic}.", "Need help with the {topic} please.",
    "Issue with my {topic} again.", "Can someone look at my {topic}?", "Problem with the {topic}, please help.",
    "Quick query regarding the {topic}.", "{Topic} issue, please help.", "Please check the {topic} for me.",
    "Not sure what is going on with the {topic}.", "Still waiting on an answer about the {topic}.",
]
_TOPICS: dict[str, list[str]] = {
    "billing": ["VAT receipt", "credit card statement", "duplicate transaction", "direct debit", "unexpected charge",
                "pending hold on my card", "invoice total", "sales tax amount", "billing cycle", "annual fee",
                "payment plan", "bank transfer", "card payment", "gift card balance", "coupon discount",
                "price match", "currency conversion fee", "chargeback", "proforma invoice", "subscription fee",
                "late payment fee", "payment confirmation", "UPI transaction", "PayPal payment", "EMI plan",
                "monthly statement", "amount debited", "billing address on the invoice"],
    "technical": ["app update", "bluetooth pairing", "wifi setup", "firmware version", "error message on the website",
                  "browser compatibility", "screen flickering", "audio lag", "battery drain after the update",
                  "sync between devices", "QR scanner in the app", "dark mode", "app permissions",
                  "voice assistant integration", "cookie banner that won't go away", "video playback in the app",
                  "slow page loads", "broken link on the help page", "camera feed", "motion sensor settings",
                  "software bug", "app widget", "smart home hub", "USB driver", "desktop site on my tablet"],
    "account": ["username", "two-factor authentication", "security questions", "account recovery", "profile photo",
                "marketing preferences", "newsletter unsubscribe", "privacy settings", "data export request",
                "account deletion", "linked social login", "household members on my account",
                "date of birth on my profile", "display name", "membership tier", "loyalty points balance",
                "login history", "account verification", "email change", "communication preferences",
                "trusted devices list", "account suspension", "age verification"],
    "shipping": ["delivery slot", "courier driver", "tracking number", "delivery address", "dispatch date",
                 "express postage", "missing parcel", "customs clearance", "delivery estimate",
                 "signature on delivery", "parcel locker", "pickup point", "delivery instructions",
                 "international shipping", "late delivery", "safe place", "redelivery", "same-day delivery",
                 "lost consignment", "delivery photo", "collection from the depot", "delivery van"],
    "returns": ["return window", "returns policy", "exchange for a different size", "return shipping label",
                "warranty claim", "refund for a returned item", "return pickup", "replacement unit",
                "defective item", "wrong size", "restocking fee", "in-store return", "return authorisation",
                "faulty charger", "unwanted gift", "swap for another colour", "return drop-off", "return status",
                "store credit for a return", "exchange voucher", "returns portal", "items I sent back"],
}
# Requests that fit several teams: (templates, teams that handle them). Rows of those teams sometimes get one.
_AMBIGUOUS: list[tuple[list[str], list[str]]] = [
    (["I want my money back for {order}.", "Please refund {amount} for the {product}."], ["billing", "returns"]),
    (["The {product} from {order} arrived damaged.", "My {parcel} arrived and the {product} inside is broken."],
     ["shipping", "returns"]),
    (["I can't complete the payment, the page just reloads.", "Paying for {order} gives me an error every time."],
     ["billing", "technical"]),
    (["I can't get into my account on the app.", "The app won't let me sign in on my {device}."],
     ["account", "technical"]),
    (["Please update my address for {order}.", "My address changed, can you make sure {order} goes there?"],
     ["account", "shipping"]),
    (["I was charged for a delivery that never came.", "I paid {amount} for {order} and never received it."],
     ["billing", "shipping"]),
    (["Please cancel {order}.", "I want to cancel the {product} I ordered {date}."], ["shipping", "returns",
                                                                                      "billing"]),
]

# Long-tail wording of the requests: each phrase is sometimes said another way, so the rarer wordings are seen
# only a few times in training (a model that knows English generalises; one that counts words has less to go on).
_PARAPHRASES: list[tuple[str, list[str]]] = [
    ("charged", ["billed", "debited", "stung", "hit with a charge"]), ("charges", ["debits", "transactions"]),
    ("payments", ["transactions", "debits"]), ("deducted", ["taken out", "withdrawn", "pulled"]),
    ("overcharged", ["billed too much", "charged extra", "ripped off"]), ("declined", ["rejected", "refused",
                                                                                        "bounced"]),
    ("invoice", ["bill", "statement"]), ("refund", ["reimbursement", "repayment"]),
    ("crashes", ["force-closes", "shuts down", "quits on me", "bombs out"]),
    ("freezing", ["hanging", "locking up", "lagging"]), ("error", ["fault code", "glitch", "bug message"]),
    ("won't connect to", ["can't get onto", "refuses to join", "fails to join"]),
    ("blank white page", ["empty screen", "white screen", "page with nothing on it"]),
    ("pairing with", ["linking to", "syncing up with", "talking to"]), ("firmware update", ["software update",
                                                                                          "system upgrade"]),
    ("push notifications", ["alerts", "reminders", "pop-up messages"]), ("reset the", ["restore the", "wipe the"]),
    ("log in", ["sign in", "get in", "access my profile"]), ("password", ["passcode", "login details",
                                                                         "credentials"]),
    ("locked", ["blocked", "suspended", "frozen"]), ("delete my account", ["erase my account", "wipe my profile",
                                                                           "remove my account"]),
    ("close my account", ["deactivate my account", "terminate my account", "shut my account down"]),
    ("hacked", ["compromised", "broken into", "taken over"]),
    ("delivered", ["dropped off", "handed over", "left"]), ("tracking", ["shipment status", "tracking info"]),
    ("in transit", ["on its way", "out for delivery", "with the carrier"]), ("arrive", ["turn up", "show up",
                                                                                        "get here"]),
    ("exchange", ["swap", "replacement"]), ("faulty", ["defective", "dodgy", "busted"]),
    ("stopped working", ["died", "packed up", "gave out", "conked out"]), ("broke", ["snapped", "fell apart",
                                                                                    "cracked"]),
    ("return label", ["returns slip", "prepaid label", "RMA label"]), ("send it back", ["return it", "ship it off"]),
]
_PARAPHRASE = re.compile(r"(?<![\w-])(" + "|".join(re.escape(p) for p, _ in
                                                    sorted(_PARAPHRASES, key=lambda x: -len(x[0]))) + r")(?![\w-])")
_PARAPHRASE_ALTS = dict(_PARAPHRASES)

_SLOT = re.compile(r"\{(\w+)\}")
_DIGIT_CHAIN = re.compile(r"\d(?:[\s().,/:+-]{0,2}\d)*")
_WORD = re.compile(r"[a-z]{5,}")


# --- composition --------------------------------------------------------------------------------------------

def _fill(template: str, rng: random.Random, region: str, ctx: dict[str, str]) -> str:
    """Replace each {slot}; a capitalised slot name capitalises its value. Per-ticket values live in ``ctx``."""
    words = _REGION_WORDS[region]

    def number(key: str) -> str:  # one order number per ticket, however it is written
        return ctx.setdefault(key, str(rng.randint(10000, 99999)))

    makers: dict[str, Callable[[], str]] = {
        "ref": lambda: f"ORD-{number('ordernum')}",
        "order": lambda: rng.choice(["ORD-{}", "order ORD-{}", "order #{}"]).format(number("ordernum")),
        "amount": lambda: _money(rng, region), "amount2": lambda: _money(rng, region),
        "date": lambda: _date(rng, region), "product": lambda: rng.choice(_PRODUCTS),
        "smart": lambda: rng.choice(_SMART), "device": lambda: rng.choice(_DEVICES),
        "app_area": lambda: rng.choice(_APP_AREAS), "plan": lambda: rng.choice(_PLANS),
        "promo": lambda: rng.choice(_PROMOS), "errcode": lambda: rng.choice(_ERRORS),
        "days": lambda: rng.choice(_DAYS + words["fortnight"]), "size": lambda: rng.choice(_SIZES),
        "colour_name": lambda: rng.choice(_COLOUR_NAMES), "years": lambda: str(rng.randint(2, 12)),
    }

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        key = name.lower()
        if key not in ctx:
            if key in words:
                ctx[key] = rng.choice(words[key])
            elif key in makers:
                ctx[key] = makers[key]()
            else:
                raise KeyError(f"unknown slot {{{name}}} in template {template!r}")
        v = ctx[key]
        return v[:1].upper() + v[1:] if name[:1].isupper() else v

    return _SLOT.sub(value, template)


def _pick_person(rng: random.Random) -> dict[str, str]:
    if rng.random() < 0.55:
        who, pron, _ = rng.choice(_PEOPLE)
    else:
        who, pron = rng.choice(_NAMES)
    return {"person": who, "pron": pron}


def _add_typo(text: str, rng: random.Random) -> str:
    """Swap two adjacent letters in one lowercase word of 5+ letters (names and codes stay intact)."""
    spans = [m.span() for m in _WORD.finditer(text)
             if (m.start() == 0 or not text[m.start() - 1].isalnum()) and
             (m.end() == len(text) or not text[m.end()].isalnum())]
    if not spans:
        return text
    start, end = rng.choice(spans)
    i = rng.randint(start + 1, end - 2)
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def _paraphrase(template: str, rng: random.Random) -> str:
    """Say some of the request's key phrases another way (see ``_PARAPHRASES``)."""
    def alt(m: re.Match[str]) -> str:
        return rng.choice(_PARAPHRASE_ALTS[m.group(1)]) if rng.random() < PARAPHRASE_RATE else m.group(1)

    return _PARAPHRASE.sub(alt, template)


def _after_greeting(template: str, rng: random.Random) -> str:
    """"Hi, the app..." more often than "Hi, The app..."; "I" and slots (courier names) keep their capital."""
    first = template.split(" ", 1)[0]
    if first[:1].isupper() and first[1:2].islower() and not first.startswith("I'") and rng.random() < 0.7:
        return template[0].lower() + template[1:]
    return template


def _compose(team: str, region: str, rng: random.Random) -> str:
    """One ticket of ``team`` written in ``region``'s English."""
    words = _REGION_WORDS[region]
    ctx: dict[str, str] = {}
    fitting = [templates for templates, teams in _AMBIGUOUS if team in teams]
    kind = rng.random()
    if fitting and kind < AMBIGUOUS_SHARE:
        request = [rng.choice(rng.choice(fitting))]
    elif kind < AMBIGUOUS_SHARE + TERSE_SHARE:
        ctx["topic"] = rng.choice(_TOPICS[team])
        request = [rng.choice(_TERSE_FRAMES)]
    else:
        intent = rng.choice(_TEAM_INTENTS[team])
        request = rng.sample(intent, 2) if rng.random() < 0.2 else [rng.choice(intent)]
    request = [_paraphrase(r, rng) for r in request]
    extras: list[str] = []
    if rng.random() < 0.35:
        extras.append(rng.choice(_CONTEXT_SENTENCES))
    if rng.random() < 0.28:
        ctx.update(_pick_person(rng))
        extras.append(rng.choice(_PEOPLE_SENTENCES))
    if rng.random() < 0.3:
        extras.append(rng.choice(words["tone"]))
    rng.shuffle(extras)
    if rng.random() < 0.6:
        request[0] = _after_greeting(request[0], rng)
        request.insert(0, rng.choice(words["greeting"]))
    parts = request + extras
    if rng.random() < 0.55:
        parts.append(rng.choice(words["signoff"]))
    if rng.random() < 0.2:
        parts.append(rng.choice(_NAMES)[0])
    text = " ".join(_fill(p, rng, region, ctx) for p in parts)
    while rng.random() < TYPO_RATE:
        text = _add_typo(text, rng)
    if rng.random() < 0.05:
        text = text.lower()
    if rng.random() < 0.08 and text.endswith("."):
        text = text[:-1]
    return text


def _acceptable(text: str) -> bool:
    """Length in words, and nothing the validation gate counts as personal data (e-mail, phone-like digits)."""
    n_words = len(text.split())
    if not MIN_WORDS <= n_words <= MAX_WORDS or "@" in text:
        return False
    return all(sum(c.isdigit() for c in m.group()) < 7 for m in _DIGIT_CHAIN.finditer(text))


def _quota(shares: dict[str, float], n: int, rng: random.Random) -> list[str]:
    """Exactly ``round(share * n)`` of each value (largest remainder), in a shuffled order."""
    raw = {k: s * n for k, s in shares.items()}
    counts = {k: int(v) for k, v in raw.items()}
    by_remainder = sorted(shares, key=lambda k: (-(raw[k] - counts[k]), list(shares).index(k)))
    for k in by_remainder[: n - sum(counts.values())]:
        counts[k] += 1
    out = [k for k in shares for _ in range(counts[k])]
    rng.shuffle(out)
    return out


def generate_support_tickets(n_rows: int = 3000, seed: int = 7) -> pd.DataFrame:
    """``n_rows`` distinct tickets (columns ticket_id, text, team, region); deterministic in (n_rows, seed)."""
    if not isinstance(n_rows, numbers.Integral) or not MIN_ROWS <= n_rows <= MAX_ROWS:
        raise InputError(f"n_rows must be an integer between {MIN_ROWS} and {MAX_ROWS} (got {n_rows!r}); "
                         "use e.g. --rows 3000")
    n_rows, rng = int(n_rows), random.Random(seed)
    teams, regions = _quota(TEAM_SHARES, n_rows, rng), _quota(REGION_SHARES, n_rows, rng)
    texts: list[str] = []
    seen: dict[str, None] = {}
    for team, region in zip(teams, regions):
        for _ in range(200):
            text = _compose(team, region, rng)
            key = normalize_text(text)
            if key not in seen and _acceptable(text):
                break
        else:
            raise InputError(f"could not compose {n_rows} distinct tickets; ask for fewer rows")
        seen[key] = None
        texts.append(text)
    noisy = sorted(rng.sample(range(n_rows), round(LABEL_NOISE * n_rows)))
    for i in noisy:
        teams[i] = rng.choice([t for t in LABELS if t != teams[i]])
    width = max(5, len(str(n_rows)))
    return pd.DataFrame({"ticket_id": [f"TCK-{i + 1:0{width}d}" for i in range(n_rows)], "text": texts,
                         "team": teams, "region": regions}, columns=COLUMNS)


def skew_group_labels(df: pd.DataFrame, group: str, to_label: str, fraction: float, seed: int = 0, *,
                      label_column: str = "team", group_column: str = "region") -> pd.DataFrame:
    """A copy where ``fraction`` of ``group``'s rows not already labelled ``to_label`` are relabelled to it.

    Makes a deliberately biased training set (one group's tickets pushed to one team) for the bias gate.
    Which rows change is fixed by ``seed``; ``round(fraction * candidates)`` rows change.
    """
    for col in (label_column, group_column):
        if col not in df.columns:
            raise InputError(f"column {col!r} is not in the data (columns are {list(df.columns)}); pass "
                             "label_column= / group_column= to match")
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"fraction must be between 0 and 1 (got {fraction}); e.g. 0.5 relabels half the rows")
    if not (df[group_column] == group).any():
        values = sorted(str(v) for v in pd.unique(df[group_column]))
        raise InputError(f"group {group!r} has no rows in column {group_column!r}; choose one of {values}")
    if not isinstance(to_label, str) or not to_label:
        raise InputError(f"to_label must be a non-empty label string (got {to_label!r})")
    out = df.copy()
    candidates = [i for i, (g, y) in enumerate(zip(out[group_column], out[label_column]))
                  if g == group and y != to_label]
    chosen = sorted(random.Random(seed).sample(candidates, round(fraction * len(candidates))))
    out.iloc[chosen, out.columns.get_loc(label_column)] = to_label
    return out


def write_support_tickets(path: Path, n_rows: int = 3000, seed: int = 7) -> Path:
    """Write the generated tickets as UTF-8 CSV with stable bytes (``\\n`` line ends, minimal quoting)."""
    path = Path(path)
    frame = generate_support_tickets(n_rows=n_rows, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(COLUMNS)
        writer.writerows(frame[COLUMNS].itertuples(index=False, name=None))
    return path


# --- causal-LM examples: instruction pairs from the tickets, and general English for the forgetting check -------

INSTRUCTION = "Which team should handle this ticket?"
INSTRUCTION_ROWS = 600


def support_instructions(tickets: pd.DataFrame) -> pd.DataFrame:
    """Tickets as instruction pairs: prompt "Which team should handle this ticket? <text>" -> response team."""
    return pd.DataFrame({"prompt": [f"{INSTRUCTION} {t}" for t in tickets["text"]],
                         "response": list(tickets["team"]), "region": list(tickets["region"])})


def write_support_instructions(path: Path, n_rows: int = INSTRUCTION_ROWS, seed: int = 7) -> Path:
    """JSONL of :func:`support_instructions` with stable bytes (one object per line, ``\\n`` line ends)."""
    import json

    path = Path(path)
    frame = support_instructions(generate_support_tickets(n_rows=n_rows, seed=seed))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        for row in frame.itertuples(index=False):
            f.write(json.dumps(row._asdict(), ensure_ascii=False) + "\n")
    return path


_SUBJECTS = ["The old library", "A small river", "My neighbour's garden", "The morning train", "A quiet village",
             "The city museum", "Our local bakery", "The mountain path", "A busy market", "The school choir",
             "An autumn storm", "The harbour", "A young teacher", "The football team", "An old bicycle"]
_VERBS = ["opens early on", "looks beautiful on", "is usually crowded on", "was repaired last", "grows quickly in",
          "feels peaceful on", "attracts visitors during", "changes slowly over", "stays calm during",
          "was busy all through"]
_TIMES = ["Monday mornings", "sunny afternoons", "the winter months", "long summer evenings", "public holidays",
          "rainy weekends", "the spring", "the first week of the year", "school holidays", "cold nights"]
_TAILS = ["and people like to talk about it.", "so it is worth a visit.", "even when the weather is poor.",
          "which surprises most newcomers.", "as the guidebooks often say.", "and nobody seems to mind.",
          "because many families live nearby.", "according to the local newspaper."]


def general_text(n_lines: int = 300, seed: int = 5) -> list[str]:
    """Plain, ticket-unrelated English sentences (deterministic in n_lines, seed): the forgetting check's text."""
    rng = random.Random(seed)
    lines: dict[str, None] = {}
    while len(lines) < n_lines:
        lines[f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_TIMES)} {rng.choice(_TAILS)}"] = None
    return list(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m tasks.example_data [--out PATH] [--rows N] [--seed S] [--instructions | --general-text]``."""
    p = argparse.ArgumentParser(prog="python -m tasks.example_data", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="examples/support_tickets.csv", help="CSV to write")
    p.add_argument("--rows", type=int, default=3000, help="number of tickets")
    p.add_argument("--seed", type=int, default=7, help="random seed")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--instructions", action="store_true", help="write instruction pairs (JSONL) instead")
    kind.add_argument("--general-text", action="store_true", help="write general English lines (--rows of them)")
    args = p.parse_args(argv)
    try:
        if args.instructions:
            path = write_support_instructions(Path(args.out), n_rows=args.rows, seed=args.seed)
        elif args.general_text:
            path = Path(args.out)
            path.write_text("\n".join(general_text(args.rows, args.seed)) + "\n", encoding="utf-8")
        else:
            path = write_support_tickets(Path(args.out), n_rows=args.rows, seed=args.seed)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
