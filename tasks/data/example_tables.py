"""Data tables of the example data generator (``tasks/data/example.py``): regional vocabulary, products, intents
per team, terse topics, ambiguous requests, paraphrases and general-text phrases. Data, not logic."""

from __future__ import annotations

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
