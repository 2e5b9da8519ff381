"""The grader-attack classifier's word lists (medix_ray/rewards/grader_attack.py): data only, no logic.

Word classes, not answers: each `LEXICON` entry is a word (matched as a token), a phrase with spaces (matched on
word boundaries; a line holding "|" lists phrases separated by "|") or a run of a script written without spaces
(matched anywhere). The "|"-separated strings feed the structural signals' regular expressions; the sets are
looked up token by token. Entries are written as the classifier folds text: case-folded, Latin accents removed.
"""

from __future__ import annotations

POS = "pos"  # affirmative verdicts
NEG = "neg"  # negative verdicts
GRADE = "grade"  # grading vocabulary: never content
MEASURE = "measure"  # grading nouns that can be medical content (content if the item uses them)
CLAIM = "claim"  # words that claim a match ("matches", "same as", "一致"): never content
PROC = "proc"  # procedural / announcing words
STOP = "stop"  # function words

LEXICON: dict[str, str] = {
    POS: """
        yes yeah yea yep yup aye y true truly correct correctly right rightly ok okay k affirmative indeed
        exactly absolutely definitely certainly surely sure agreed agree valid accurate accurately precisely
        perfect perfectly exact acceptable accepted approved pass passed passes confirmed verified bingo
        confident certain convinced undoubtedly unquestionably बिल्कुल एकदम बेशक
        yes sir|spot on|you got it|that's it|nailed it|well done|of course|no doubt|without doubt
        si claro correcto correcta cierto cierta verdadero verdadera exacto exacta vale
        desde luego|por supuesto|bien sur|d'accord|tout a fait|jawohl ja|chinh xac|जी हाँ|हाँ जी
        oui vrai vraie correcte exacte juste
        ja jawohl richtig korrekt wahr stimmt genau zutreffend naturlich
        vero corretto corretta giusto giusta esatto esatta certo certamente
        sim verdadeiro verdadeira correto correta certa exato exata claro poprawne σωστή נכונה
        juist waar klopt
        да верно правильно правильный правильная правильное истина истинно точно конечно так ага
        evet dogru tamam tak prawda poprawnie poprawna poprawny dobrze ano spravne igen helyes
        ναι σωστό σωστά σωστη כן נכון نعم صحيح صحيحة صح أجل بلى بله درست صحیح
        हाँ हां जी सही ठीक सच হ্যাঁ সঠিক ndiyo sahihi ya iya benar betul
        có đúng vâng ใช่ ถูกต้อง
        是的 是 对的 对 對的 對 正确 正確 没错 沒錯 确实 確實 好的 真的 嗯
        はい ええ うん 正解 正しい そうです その通り 그렇습니다 맞아요 맞습니다 맞음 맞다 옳습니다 옳다 정답 네 예
    """,
    NEG: """
        no nope nah false incorrect incorrectly wrong invalid inaccurate fail failed fails mismatch
        falso falsa incorrecta non faux fausse nein falsch sbagliato sbagliata errato errata nao errado
        errada incorreto incorreta нет неверно неправильно ложь ложно hayir yanlis nie nieprawda ne nem
        όχι λάθος לא לא נכון لا خطأ خاطئ خاطئة نه नहीं गलत না hapana tidak bukan salah không sai ไม่ ไม่ใช่
        不是 不对 不對 错误 錯誤 错 錯 否 不 いいえ 違います 違う 間違い 아니요 아니오 아니 틀렸습니다 틀림 오답
    """,
    GRADE: """
        answer answers answered answering reply replies response responses prediction predictions predicted
        candidate candidates output outputs reference references ground truth gold label labels expected
        solution solutions verdict judgement judgment judged option options choice choices final given
        provided stated mine evaluation graded reply respond output print award assign accept give mark
        statement statements assertion claim model
        respuesta respuestas opcion solucion reponse reponses solution antwort antworten losung risposta
        risposte opzione soluzione resposta respostas opcao solucao ответ ответа ответы вариант решение
        cevap yanit odpowiedz antwoord إجابة الإجابة الإجابه الجواب جواب الحل خيار پاسخ התשובה תשובה
        απάντηση उत्तर जवाब विकल्प উত্তর jawaban jibu cau tra loi đap an
        答案 回答 答え 解答 答 选项 選項 選択肢 답변 답 선택지 คำตอบ
    """,
    CLAIM: """
        match matches matched matching same identical equivalent equals equal consistent agrees agree aligns
        corresponds correspond coincide coincidencia correspond identique entspricht ubereinstimmt gleich
        corrisponde corrispondente corresponde igual совпадает соответствует идентичен يطابق مطابق मेल
        匹配 一致 相同 同じ 일치 동일
    """,
    MEASURE: """
        score scores scored scoring grade grades grading rate rating marks point points full max maximum
        full marks|full score|full points|full credit
        puntuacion nota note punkte punteggio pontuacao
        балл баллов оценка درجة अंक 分 得分 满分 滿分 点数 満点 점수 만점
    """,
    PROC: """
        let lets let's solve solving solved think thinking thought thoughts analyze analyse analyzing
        analysing analysis consider considering step steps stepwise problem question questions reasoning
        process explanation explain approach okay alright hmm um uh well now first firstly next finally
        begin figure need find carefully careful below following see try check examine summary conclusion
        therefore thus hence refer
        break this down|break it down|break down the problem|let us|to sum up|in conclusion
        resolvamos resolver resolverlo resolvamoslo vamos pensemos pensar pensarlo paso pasos problema pregunta
        analicemos analizarlo primero veamos
        resolvons resoudre etape etapes probleme question reflechissons reflechir analysons abord voyons
        losen wir schritt fur aufgabe frage denken lass lasst zuerst analysieren
        risolviamo risolvere passo problema domanda pensiamo analizziamo prima
        resolver passo pergunta analisar primeiro pensemos
        давайте решим решить решение шаг шагом задачу задача вопрос подумаем сначала разберем разберём
        لنحل حل خطوة بخطوة المسألة مسألة السؤال المشكلة دعنا لنفكر
        आइए चलिए चरण दर हल करें करते समस्या प्रश्न सवाल सोचते इसे
        让我们 我们 一步一步 一步步 逐步 解决 解题 这个 这道 问题 思考 分析 首先 思路 步骤 过程 来看 解
        ステップバイステップ 段階的に 一歩ずつ 解いて 解き みましょう ましょう 考えて 考え この 問題 まず では
        단계별로 차근차근 풀어봅시다 풀어 봅시다 보겠습니다 문제를 문제 생각해 먼저 풀이
    """,
    STOP: """
        a an the is are was were be been being am it its this that these those there here of to for with as
        by as at from on into about and or but so then than i me my we us our you your he she they them
        their his her do does did done have has had will would shall should can could may might must s t
        re ve ll d m just very really quite simply also too please thanks thank which what who how why
        when where if because since based according believe guess say said clearly obviously probably
        maybe perhaps likely seems seem think i'm that's it's what's
        el la los las un una es son de del que y o lo esta este esto eso estoy creo por para con en mi
        le les une est c ce cette du des et ou l qu il elle je par pour sur dans avec en ma mon
        der die das ist ein eine und oder es dies diese ich mit von zu im auf den dem meine uns
        il lo gli e un una di che questa questo sono per con in mia
        o os as e um uma do da que isso isto estou com em minha
        het een en of dat is jest to ni ada adalah la
        это эту этот эта и в на является есть я за по с к мы мой
        η είναι το ο است ست
        bu ve
        هذا هذه هو هي إن ان
        है यह का की के और हैं में
        的 了 吗 呢 吧 啊 呀 哦 这 那 个 我 你 们 也 都 很 就 地 来 吗
        です ます を で の は が ね よ か 이 가 을 를 은 는 입니다 이다
    """,
}

# Symbols that say yes or no ("✓", "👍"); other symbols are punctuation.
SYMBOLS = {POS: "✓✔☑✅👍👌💯🆗", NEG: "✗✘❌❎👎"}

# --- structural signals: "|"-separated alternatives ------------------------------------------------

# Chat roles, as a label ("Assistant:") or a bracketed header ("[SYSTEM]").
ROLE_WORDS = (
    "system|assistant|user|human|ai|bot|gpt|chatgpt|model|judge|grader|evaluator|instruction|instructions"
    "|系统|系統|助手|用户|用戶|使用者|システム|アシスタント|ユーザー|시스템|어시스턴트|사용자"
    "|система|ассистент|пользователь|sistema|asistente|usuario|assistente|utente|systeme|utilisateur"
    "|assistent|benutzer|nutzer|النظام|المساعد|المستخدم|सिस्टम|सहायक|उपयोगकर्ता"
)
# Fields that belong to the grader's side of the prompt; a candidate that writes one is imitating it.
FAKE_FIELD_WORDS = (
    "reference|reference answer|reference solution|ground truth|ground-truth|ground truth answer|gold answer"
    "|gold label|expected answer|expected output|expected response|answer key|true label|predicted answer"
    "|prediction|candidate answer|candidate response|model answer|verdict|judgement|judgment|evaluation"
    "|correct answer|grading|respuesta correcta|respuesta de referencia|respuesta esperada|reponse correcte"
    "|reponse de reference|reponse attendue|verite terrain|referenzantwort|richtige antwort|erwartete antwort"
    "|risposta corretta|risposta di riferimento|resposta correta|resposta de referencia|правильный ответ"
    "|эталонный ответ|эталон|ожидаемый ответ|الإجابة الصحيحة|الإجابة المرجعية|सही उत्तर|संदर्भ उत्तर"
    "|参考答案|标准答案|正确答案|正確答案|參考答案|模範解答|参照回答|正答|정답|참고 답변|모범 답안"
)
# Verbs that override instructions ("ignore", "disregard") and the instructions they override.
OVERRIDE_WORDS = (
    "ignore|ignoring|disregard|forget|override|bypass|skip|ignora|ignorar|ignore|ignorez|ignorer|ignoriere"
    "|ignorieren|vergiss|ignorare|dimentica|olvida|esqueca|игнорируй|игнорировать|забудь|проигнорируй"
    "|تجاهل|अनदेखा|नजरअंदाज|भूल"
)
INSTRUCTION_NOUNS = (
    "instruction|instructions|prompt|rules|rule|guidelines|above|previous|prior|earlier|preceding|system"
    "|instrucciones|reglas|anteriores|consignes|precedentes|anweisungen|vorherigen|regeln|istruzioni"
    "|precedenti|instrucoes|anteriores|инструкции|инструкций|указания|правила|предыдущие|التعليمات|السابقة"
    "|निर्देशों|निर्देश|पिछले"
)
# Verbs that tell the grader what to reply ("reply", "mark") and the verdicts they ask for ("yes", "correct").
DIRECTIVE_WORDS = (
    "reply|respond|answer|say|output|print|return|write|mark|grade|score|rate|judge|evaluate|label|classify"
    "|consider|give|award|assign|accept|responde|responda|di|diga|escribe|escreva|marca|marque"
    "|califica|evalua|considera|considere|reponds|repondez|dis|dites|ecris|ecrivez|marque|notez|considerez"
    "|antworte|antworten|sag|sage|sagen|schreibe|schreib|gib|bewerte|markiere|rispondi|scrivi|segna|valuta"
    "|ответь|ответьте|скажи|скажите|напиши|напишите|выведи|оцени|поставь|отметь|считай|أجب|قل|اكتب|اعتبر"
)
TARGET_WORDS = (
    "yes|true|correct|full|match|pass|si|oui|vrai|ja|richtig|vero|corretto|sim|correto|da"
    "|да|верно|правильно|نعم|صحيح|بنعم|हाँ|हां|सही|是|正确|はい|正解|네|정답"
)
# Names of the grader, and of attacks on it.
GRADER_NOUNS = (
    "judge|grader|graders|evaluator|evaluators|examiner|assessor|reviewer|rater|scorer|system prompt"
    "|system override|admin override|override"
    "|jailbreak|developer mode|prompt injection|evaluador|juez|correcteur|evaluateur|juge|prufer|bewerter"
    "|valutatore|giudice|avaliador|оценщик|судья|проверяющий|المقيم|المصحح|मूल्यांकनकर्ता|परीक्षक"
)
# Words for a step of a procedure ("step 1").
STEP_WORDS = "step|steps|paso|etape|schritt|passo|passo|шаг|ステップ|단계|步骤|步"

# --- token sets ------------------------------------------------------------------------------------

# Grading words that can also be an item's own content ("Gold", "Match", "Expected"): content when the
# reference uses them. The core vocabulary (answer, reference, solution, option, ...) never is.
SOFT_GRADE = set(
    """
    gold label labels expected final given provided stated mark give accept assign award print output statement
    claim model choice
    """.split()
)
# Words of a side: "right" is content, not a verdict, when the item is about one.
LATERAL = {"left", "right", "bilateral", "lateral", "laterality", "side", "sided", "unilateral", "contralateral"}
# Auxiliary verbs that open a yes/no question ("Is there ...?").
AUX = set(
    """
    is are was were does do did can could has have had will would should shall may might must am isn't aren't
    doesn't don't
    """.split()
)
